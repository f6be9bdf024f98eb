"""The `odt` command as a user runs it: subprocesses, real Hopper-v5, real files."""
import json
import subprocess
import sys

import pytest

from odt.config import Config, preset, preset_names

TINY = ["--preset", "cpu-small", "--embed-dim", "32", "--n-layer", "1", "--batch-size", "8",
        "--pretrain-updates", "6", "--online-steps", "60", "--updates-per-round", "3", "--eval-every", "2",
        "--eval-episodes", "2", "--max-ep-len", "1000", "--threads", "1", "--episodes-per-round", "1", "--no-progress"]


def odt(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "odt.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@pytest.mark.slow
def test_run_writes_a_complete_run_directory(tmp_path, hopper_npz):
    out = tmp_path / "run"
    odt("run", *TINY, "--dataset", hopper_npz, "--out", out, "--seed", 3)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["embed_dim"] == 32 and cfg["preset"] == "cpu-small" and cfg["seed"] == 3
    assert Config.from_dict(cfg).validate()  # the saved config is a complete, valid config
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all({"phase", "updates", "online_steps"} <= r.keys() for r in rows)
    rounds = [r for r in rows if r.get("event") == "round"]
    evals = [r for r in rows if r.get("event") == "eval"]
    assert rounds and all({"g_online", "lambda", "entropy", "nll", "lr"} <= r.keys() for r in rounds)
    assert evals and all({"eval_return_mean", "eval_return_std", "eval_normalized_mean"} <= r.keys() for r in evals)
    assert rounds[-1]["online_steps"] >= 60 and rounds[-2]["online_steps"] < 60  # the budget, then stop
    assert [r["updates"] for r in rounds] == [6 + 3 * (i + 1) for i in range(len(rounds))]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert {p.name for p in (out / "checkpoints").iterdir()} >= {"pretrained.pt", "final.pt"}
    summary = json.loads((out / "summary.json").read_text())
    for phase in ("offline", "final"):
        assert {"return_mean", "return_std", "normalized_mean"} <= summary[phase].keys()
    assert summary["online_steps"] == rounds[-1]["online_steps"]
    assert "summary" in (out / "run.log").read_text()

    # The policy evaluates from the run directory, and acts step by step in Python.
    p = odt("eval", "--run", out, "--episodes", 2, "--json", "--threads", 1)
    res = json.loads(p.stdout)
    assert res["episodes"] == 2 and "normalized_mean" in res
    import gymnasium as gym

    from odt import Policy

    policy = Policy.load(out)
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    policy.reset(target_return=3600)
    action = policy.act(obs)
    assert action.shape == (3,) and env.action_space.contains(action.astype("float32"))

    # Finetuning again from this run, in a new directory.
    out2 = tmp_path / "ft"
    odt("finetune", *TINY, "--dataset", hopper_npz, "--init", out, "--out", out2)
    rows2 = [json.loads(line) for line in (out2 / "metrics.jsonl").read_text().splitlines()]
    assert rows2[0]["updates"] == 6  # starts where pretraining ended


@pytest.mark.slow
def test_pretrain_only_and_dt(tmp_path, hopper_npz):
    out = tmp_path / "dt"
    odt("pretrain", *TINY, "--algo", "dt", "--dataset", hopper_npz, "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    assert "offline" in summary and "final" not in summary
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("mse" in r for r in rows if r["phase"] == "pretrain" and "loss" in r)


@pytest.mark.parametrize("args,needle", [
    (["run", "--preset", "no-such-preset"], "unknown preset"),
    (["run", "--env", "NoSuchEnv-v0"], "unknown environment"),
    (["run", "--context-len", "0"], "--context-len must be positive"),
    (["run", "--online-steps", "-5"], "--online-steps must be >= 0"),
    (["run", "--dataset", "/nonexistent/data.npz"], "does not exist"),
    (["run", "--algo", "dt", "--action-head", "gaussian"], "deterministic actor"),
    (["finetune"], "needs --init"),
    (["eval", "--run", "/nonexistent/run"], "not a run directory"),
    (["frobnicate"], "unknown command"),
])
def test_bad_input_gives_one_line_and_exit_2(args, needle):
    p = odt(*args, check=False)
    assert p.returncode == 2, p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_existing_run_directory_is_not_overwritten(tmp_path, hopper_npz):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    p = odt("run", *TINY, "--dataset", hopper_npz, "--out", out, check=False)
    assert p.returncode == 2 and "--overwrite" in p.stderr
    assert (out / "precious.txt").read_text() == "keep me"


def test_dataset_for_another_environment_is_refused(tmp_path, hopper_npz):
    p = odt("run", *TINY, "--dataset", hopper_npz, "--env", "HalfCheetah-v5", "--out", tmp_path / "x", check=False)
    assert p.returncode == 2 and "observation dimension 11" in p.stderr


def test_presets_hold_the_paper_tables():
    names = preset_names()
    for n in ["hopper-medium", "hopper-medium-replay", "walker2d-medium", "walker2d-medium-replay",
              "halfcheetah-medium", "halfcheetah-medium-replay", "ant-medium", "ant-medium-replay",
              "antmaze-umaze", "antmaze-umaze-diverse", "cpu-small"]:
        assert n in names and n + "-offline" in names or n == "cpu-small"
    hmr = preset("hopper-medium-replay")  # Table C.4 row
    assert (hmr.pretrain_updates, hmr.buffer_size, hmr.lr, hmr.weight_decay, hmr.eval_context,
            hmr.g_eval, hmr.g_online, hmr.timestep_embedding) == (5000, 1000, 0.002, 0.0001, 5, 3600, 7200, False)
    amd = preset("antmaze-umaze-diverse")
    assert amd.embed_dim == 1024 and amd.buffer_size == 1500 and amd.timestep_embedding
    assert preset("ant-medium").eval_context == 1
    off = preset("walker2d-medium-offline")  # Tables C.1 and C.2
    assert (off.eval_context, off.timestep_embedding, off.g_eval, off.pretrain_updates, off.weight_decay) == \
        (1, False, 5000, 1_000_000, 0.001)
    for n in names:
        preset(n).validate()


def test_cpu_vidt_keeps_the_official_critic_horizon_on_cpu_small_s_transformer():
    small, vidt = preset("cpu-small"), preset("cpu-vidt")
    differs = {k for k, v in vidt.to_dict().items() if small.to_dict()[k] != v}
    # only what the TD3 critics see, plus the dataset and budget: ODT and DT under cpu-vidt are cpu-small's
    assert differs == {"dataset", "algo", "online_steps", "tau", "critic_pretrain_updates"}, differs
    # Polyak steps before the first online round: one per actor update in pretraining, one per
    # policy_delay critic-only updates after it (the official code: 0.005 x 5000 = 25)
    target_updates = vidt.pretrain_updates + vidt.critic_pretrain_updates // vidt.policy_delay
    assert vidt.tau * target_updates >= 25 > small.tau * small.pretrain_updates


def test_cpu_pointmaze_vidt_is_cpu_pointmaze_in_the_official_maze2d_shape_with_cpu_vidt_s_horizon():
    base, vidt, hopper = preset("cpu-pointmaze"), preset("cpu-pointmaze-vidt"), preset("cpu-vidt")
    differs = {k for k, v in vidt.to_dict().items() if base.to_dict()[k] != v}
    assert differs == {"algo", "context_len", "eval_context", "policy_delay", "critic_lr", "updates_per_round",
                       "tau", "critic_pretrain_updates"}, differs
    # the official maze2d-umaze-v1 command: --K 1 --eval_context_length 1 --num_actor_update_interval 1
    # --critic_learning_rate 0.0002; 300 updates per round of 4 x 300 steps, near its 0.3 per step
    assert (vidt.context_len, vidt.eval_context, vidt.policy_delay, vidt.critic_lr) == (1, 1, 1, 2e-4)
    assert 0.2 <= vidt.updates_per_round / (vidt.episodes_per_round * vidt.max_ep_len) <= 0.3
    assert (vidt.tau, vidt.critic_pretrain_updates) == (hopper.tau, hopper.critic_pretrain_updates)


def test_a_preset_base_overrides_in_order_and_a_cycle_is_one_line(tmp_path, monkeypatch):
    import odt.config as config

    (tmp_path / "a.toml").write_text('description = "a"\nlr = 0.001\nbatch_size = 32\n')
    (tmp_path / "b.toml").write_text('base = "a"\nlr = 0.002\n')
    (tmp_path / "c.toml").write_text('base = "b"\nbatch_size = 8\n')
    (tmp_path / "x.toml").write_text('base = "y"\n')
    (tmp_path / "y.toml").write_text('base = "x"\n')
    monkeypatch.setattr(config, "PRESET_DIR", tmp_path)
    c = config.preset("c")
    assert (c.lr, c.batch_size) == (0.002, 8)  # each file over its base, the nearest last
    with pytest.raises(config.ConfigError, match="x -> y -> x"):
        config.preset("x")


def test_flags_override_presets():
    from odt.cli import parse_config

    cfg = parse_config("run", ["--preset", "hopper-medium", "--lr", "0.003", "--seed", "4"])
    assert cfg.lr == 0.003 and cfg.seed == 4 and cfg.embed_dim == 512 and cfg.preset == "hopper-medium"


def test_help_of_each_command(capsys):
    from odt.cli import main

    # One command as a user types it; the others through the same main(), in this process (each
    # subprocess costs an import of torch, seconds).
    for cmd in ("pretrain", "finetune", "eval", "export", "baseline"):
        try:
            code = main([cmd, "--help"])
        except SystemExit as e:
            code = e.code
        assert code in (0, None), cmd
        assert "--help" in capsys.readouterr().out, cmd
    p = odt("run", "--help")
    assert "--help" in p.stdout
    for flag in ["--env", "--dataset", "--preset", "--out", "--seed", "--algo", "--pretrain-updates",
                 "--online-steps", "--updates-per-round", "--eval-every", "--eval-episodes", "--device",
                 "--wandb", "--random-episodes", "--iql-expectile"]:
        assert flag in p.stdout, flag


@pytest.mark.parametrize("args,needle", [
    (["run", "--lr", "abc"], "Error parsing --lr: could not convert string to float: 'abc'"),
    (["run", "--lrr", "3"], "Unrecognized options: --lrr, 3 (did you mean --lr FLOAT?)"),
    (["run", "--action-head", "xyz"], "Expected one of ('auto', 'deterministic', 'gaussian', 'tanh_gaussian', 'categorical')"),
    (["eval"], "Missing from odt eval: --run PATH"),
    (["data", "generate", "--env", "Hopper-v5"], "--quality {random,medium,medium-replay,expert,waypoints} --out STR"),
    (["data", "inspect"], "Missing from odt data inspect: STR"),
    (["data", "frob"], "needs a subcommand"),
])
def test_parser_errors_are_one_line(args, needle, capsys):
    from odt.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("odt: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("algo", ["odt", "vidt"])
def test_same_seed_writes_identical_metrics(algo, tmp_path, hopper_npz):
    from odt.cli import main

    for name in ("a", "b"):
        assert main(["run", *TINY, "--algo", algo, "--dataset", str(hopper_npz), "--out", str(tmp_path / name)]) == 0
    a, b = ((tmp_path / n / "metrics.jsonl").read_text() for n in ("a", "b"))
    assert a == b and '"event": "eval"' in a and '"event": "round"' in a
    other = tmp_path / "c"
    assert main(["run", *TINY, "--algo", algo, "--seed", "1", "--dataset", str(hopper_npz), "--out", str(other)]) == 0
    assert (other / "metrics.jsonl").read_text() != a  # the seed matters


@pytest.mark.parametrize("restart", [False, True])
def test_finetune_init_carries_the_optimizers_over_like_run(restart, tmp_path, hopper_npz):
    from odt.checkpoint import load_checkpoint
    from odt.cli import main

    pre, ft = tmp_path / "pre", tmp_path / "ft"
    tiny = [*TINY, "--dataset", str(hopper_npz)]
    assert main(["pretrain", *tiny, "--out", str(pre)]) == 0
    flags = ["--restart-optimizers"] if restart else []
    assert main(["finetune", *tiny, "--init", str(pre), "--out", str(ft), "--lr", "2e-3", "--lambda-lr", "3e-3",
                 *flags]) == 0
    rounds = [r for r in map(json.loads, (ft / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "round"]
    state = load_checkpoint(ft / "checkpoints" / "final.pt")["ensemble"]["learners"][0]
    updates = rounds[-1]["updates"]
    # cpu-small warms up over 500 updates. Carried over, the schedule and LAMB's step count go on
    # from the 6 pretraining updates; restarted, they count this run's updates alone.
    steps = updates - 6 if restart else updates
    assert state["optimizer"]["param_groups"][0]["step"] == steps
    assert rounds[-1]["lr"] == pytest.approx(1e-4 * steps / 500)  # this run's --finetune-lr applies
    assert state["lambda_optimizer"]["param_groups"][0]["lr"] == 3e-3  # and its --lambda-lr
