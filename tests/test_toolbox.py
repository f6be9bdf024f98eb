"""The practical toolbox: for each switch a short run whose metrics.jsonl shows it acting (its
schedules, replay and learner parts are tested in test_schedules, test_buffer and test_learner)."""
import json

import pytest
import torch

from odt.cli import main
from odt.config import Config, preset
from odt.flags import parse_config


# --- short runs: each switch visible in metrics.jsonl ------------------------------------------
def _run(tmp_path, name, *flags, command="run"):
    out = tmp_path / name
    args = [command, "--preset", "reward-hill", "--out", str(out), "--no-progress", "--pretrain-updates", "100",
            "--online-steps", "200", "--eval-every", "5", *flags]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, rows


def _rounds(rows):
    return [r for r in rows if r.get("event") == "round"]


def _progress_before(rounds, budget):
    steps = [0] + [r["online_steps"] for r in rounds[:-1]]
    return [s / budget for s in steps]


def test_schedules_in_a_run(tmp_path):
    _, rows = _run(tmp_path, "sched", "--noise-std", "0.3", "--noise-schedule", "linear", "--noise-floor", "0.05",
                   "--offline-ratio", "0.5:0.1", "--finetune-lr", "1e-4", "--lr-decay", "linear",
                   "--reg-weight", "0.5", "--return-target", "ucb", "--target-beta0", "0", "--target-window", "10")
    rounds = _rounds(rows)
    assert len(rounds) == 20
    for r, p in zip(rounds, _progress_before(rounds, 200)):
        assert r["noise_std"] == pytest.approx(max(0.05, 0.3 * (1 - p)))
        assert r["offline_ratio"] == pytest.approx(0.5 + (0.1 - 0.5) * p)
        assert r["lr"] == pytest.approx(1e-4 * (1 - p))
        assert r["reg_loss"] >= 0
    assert rounds[-1]["reg_loss"] > 0
    # ucb with beta 0 over the last 10 returns: each round's target is the previous round's mean return
    for prev, r in zip(rounds, rounds[1:]):
        assert r["g_online"] == pytest.approx(prev["rollout_return_mean"], rel=1e-5)


def test_defaults_stay_the_papers_odt(tmp_path):
    _, rows = _run(tmp_path, "paper", "--g-online", "0.7")
    rounds = _rounds(rows)
    assert all(r["g_online"] == 0.7 and r["noise_std"] == 0.0 for r in rounds)
    assert not any("offline_ratio" in r or "reg_loss" in r for r in rounds)
    assert all(r["lr"] == pytest.approx(1e-3) for r in rounds)
    seeded = next(r for r in rows if r.get("event") == "buffer_seeded")
    assert seeded["seeding"] == "top"
    assert not any(r.get("event") in ("rollback_to_best", "early_stop") for r in rows)


def test_target_clip_multiple_and_best_eval_target(tmp_path):
    from odt.data.sources import load_dataset

    best_data = load_dataset("odt/reward-hill").returns().max()
    _, rows = _run(tmp_path, "clip", "--target-multiple", "50", "--target-clip", "--eval-target", "best",
                   "--ref-min-score", "0", "--ref-max-score", "1", "--buffer-seeding", "random")
    rounds = _rounds(rows)
    assert rounds[0]["g_online"] == pytest.approx(1.2 * best_data)  # 50 x expert, clipped to 1.2 x highest
    evals = [r for r in rows if r.get("event") == "eval"]
    assert evals[0]["g_eval"] == pytest.approx(best_data)
    assert all(b["g_eval"] >= a["g_eval"] for a, b in zip(evals, evals[1:]))
    assert next(r for r in rows if r.get("event") == "buffer_seeded")["seeding"] == "random"


def test_best_checkpoint_rollback_restores_best_weights_exactly_and_early_stop(tmp_path):
    from odt.checkpoint import load_checkpoint
    from odt.setup import setup

    cfg = preset("reward-hill")
    cfg.out, cfg.progress, cfg.pretrain_updates = tmp_path / "rb", False, 20
    cfg.rollback_drop, cfg.rollback_lr_factor, cfg.early_stop_patience = 0.1, 0.5, 2
    run = setup(cfg, "run")
    try:
        run.pretrain()
        run.run.phase = "online"
        run.replay.buffer = run.replay.whole_dataset()
        assert run._after_eval({"eval_return_mean": 1.0}) is None  # the first is the best
        best = load_checkpoint(run.run_dir / "checkpoints" / "best.pt")
        run._updates(run.buffer, 5)
        assert not torch.equal(next(run.learner.model.parameters()),
                               best["ensemble"]["learners"][0]["model"][next(iter(best["ensemble"]["learners"][0]["model"]))])
        updates = run.learner.updates
        assert run._after_eval({"eval_return_mean": 0.95}) is None  # within 10%: no rollback
        assert run._after_eval({"eval_return_mean": 0.5}) == "rolled_back"
        for k, v in run.learner.model.state_dict().items():
            assert torch.equal(v, best["ensemble"]["learners"][0]["model"][k]), k
        assert torch.equal(run.learner.temperature.log_lambda, best["ensemble"]["learners"][0]["log_lambda"])
        assert run.learner.updates == updates and run.safety.lr_factor == 0.5
        assert run._after_eval({"eval_return_mean": 0.99}) == "stop"  # 3 evaluations without a new best
    finally:
        run.close()
    events = [json.loads(line) for line in (tmp_path / "rb" / "metrics.jsonl").read_text().splitlines()]
    names = [e["event"] for e in events if e.get("event") in ("new_best", "rollback_to_best", "early_stop")]
    assert names == ["new_best", "rollback_to_best", "early_stop"]
    rb = next(e for e in events if e.get("event") == "rollback_to_best")
    assert rb["best_return"] == 1.0 and rb["eval_return"] == 0.5 and rb["lr_factor"] == 0.5


def test_early_stop_ends_finetuning_before_the_budget(tmp_path):
    out, rows = _run(tmp_path, "early", "--early-stop-patience", "1", "--eval-every", "1", "--online-steps", "2000")
    events = [r["event"] for r in rows if "event" in r]
    assert "early_stop" in events  # ten-step evaluations of a one-step task rarely improve twice in a row
    summary = json.loads((out / "summary.json").read_text())
    assert summary["online_steps"] < 2000 and "best" in summary
    assert (out / "checkpoints" / "best.pt").is_file()


def test_ensemble_disagreement_and_member_modes(tmp_path):
    from odt.policy import EnsemblePolicy, load_policy

    out, rows = _run(tmp_path, "ens", "--ensemble", "2", "--online-steps", "50")
    rounds = _rounds(rows)
    assert all(r["ensemble_disagreement"] > 0 for r in rounds)
    policy = load_policy(out, "final")
    assert isinstance(policy, EnsemblePolicy) and len(policy.members) == 2
    a, b = (next(m.model.parameters()) for m in policy.members)
    assert not torch.equal(a, b)  # separately seeded
    _, rows = _run(tmp_path, "ens-member", "--ensemble", "2", "--ensemble-mode", "member", "--online-steps", "50")
    assert _rounds(rows)


def test_toolbox_flags_on_finetune_and_run():
    flags = ["--return-target", "percentile", "--noise-schedule", "cosine", "--noise-std", "0.2",
             "--offline-ratio", "0.5:0.1", "--reg-weight", "0.1", "--rollback-drop", "0.2",
             "--early-stop-patience", "3"]
    for command in ("run", "finetune"):
        cfg = parse_config(command, flags)
        assert (cfg.return_target, cfg.noise_schedule, cfg.noise_std, cfg.offline_ratios(), cfg.reg_weight,
                cfg.rollback_drop, cfg.early_stop_patience) == ("percentile", "cosine", 0.2, (0.5, 0.1), 0.1, 0.2, 3)


@pytest.mark.parametrize("flags, message", [
    (["--offline-ratio", "0.5:x"], "--offline-ratio takes START or START:END"),
    (["--offline-ratio", "1.5"], "fractions in [0, 1]"),
    (["--rollback-drop", "2"], "--rollback-drop is a fraction"),
    (["--target-p1", "120"], "--target-p1 is a percentile"),
    (["--noise-std", "-1"], "--noise-std must be >= 0"),
    (["--ensemble", "0"], "--ensemble must be >= 1"),
    (["--tasks", "Hopper-v5"], "is not ENV=DATASET"),
    (["--tasks", "Hopper-v5=odt/hopper-medium", "--return-target", "ucb"], "fixed targets per task"),
    (["--target-multiple", "2"], "--target-multiple needs the expert return"),  # before pretraining, not after
])
def test_bad_toolbox_settings_are_one_line_errors(tmp_path, capsys, flags, message):
    out = tmp_path / "never"
    assert main(["run", "--preset", "reward-hill", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_old_configs_with_explore_noise_still_load():
    d = Config(algo="vidt").to_dict()
    del d["noise_std"]
    d["explore_noise"] = 0.3
    assert Config.from_dict(d).exploration_noise() == 0.3
    d["algo"] = "odt"
    assert Config.from_dict(d).exploration_noise() == 0.0


@pytest.mark.slow
def test_multitask_pads_spaces_mixes_batches_and_evaluates_per_task(tmp_path, hopper_npz):
    from odt.data.formats import save_npz
    from odt.data.generate import collect

    pend = tmp_path / "pendulum.npz"
    save_npz(collect("InvertedPendulum-v5", 1500, seed=0, policy=None, name="p", log=lambda line: None), pend)
    out = tmp_path / "mt"
    assert main(["run", "--preset", "cpu-small", "--tasks", f"Hopper-v5={hopper_npz}",
                 f"InvertedPendulum-v5={pend}:1000:2000", "--out", str(out), "--no-progress", "--embed-dim", "32",
                 "--pretrain-updates", "30", "--online-steps", "300", "--updates-per-round", "5",
                 "--eval-episodes", "2", "--eval-every", "3", "--buffer-size", "40", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ev = [r for r in rows if r.get("event") == "eval"][-1]
    assert ev["eval_episodes"] == 4 and ev["g_eval_invertedpendulum_v5"] == 1000.0
    assert ev["g_eval_hopper_v5"] == pytest.approx(3234.3)  # D4RL's expert return
    assert "eval_hopper_v5_normalized_mean" in ev and "eval_invertedpendulum_v5_return_mean" in ev
    assert ev["eval_return_mean"] == pytest.approx((ev["eval_hopper_v5_return_mean"]
                                                    + ev["eval_invertedpendulum_v5_return_mean"]) / 2)
    r = _rounds(rows)[0]
    assert r["g_online_hopper_v5"] == pytest.approx(2 * 3234.3) and r["g_online_invertedpendulum_v5"] == 2000.0
    seeded = next(r for r in rows if r.get("event") == "buffer_seeded")
    assert seeded["trajectories"] == 40  # 20 of each task
    state = torch.load(out / "checkpoints" / "final.pt", weights_only=True)
    assert state["spec"]["obs_dim"] == 11 and state["spec"]["act_dim"] == 3  # Hopper's: the larger
    assert main(["eval", str(out)]) == 2  # per-task evaluations live in metrics.jsonl


@pytest.mark.parametrize("checkpoint", ["latest.prev", "latest"])
def test_resume_restores_the_toolbox_state_exactly(tmp_path, checkpoint):
    """A run resumed from its second-to-last checkpoint writes the same metrics as the whole run:
    targets, noise, replay mixing, penalty anchor, best checkpoint and ensemble all carry over.
    From the last one (after the last round's evaluation), the evaluation is not redone."""
    import os

    flags = ["--return-target", "ucb", "--noise-std", "0.2", "--noise-schedule", "cosine", "--offline-ratio", "0.5:0.1",
             "--reg-weight", "0.5", "--rollback-drop", "0.01", "--ensemble", "2", "--eval-every", "2",
             "--checkpoint-every", "1", "--online-steps", "100", "--no-hindsight"]
    if checkpoint == "latest":  # no rollback at the last evaluation: that one would be measured again anyway
        flags[flags.index("--rollback-drop") + 1] = "0.99"
    out, rows = _run(tmp_path, "whole", *flags)
    ckpt = out / "checkpoints"
    for suffix in ("", ".sha256"):  # as if killed right after that checkpoint
        os.replace(ckpt / f"{checkpoint}.pt{suffix}", ckpt / f"latest.pt{suffix}")
    (out / "summary.json").unlink()
    (ckpt / "final.pt").unlink()
    assert main(["run", "--resume", str(out)]) == 0
    resumed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert resumed == rows
