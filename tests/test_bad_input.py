"""Every bad input a user can give ends in exit code 2 and one line naming the problem, with no
traceback: command-line arguments, presets, configs, datasets, run directories and checkpoints."""
import dataclasses
import json
import typing

import gymnasium as gym
import numpy as np
import pytest
from helpers import make_episode

from odt.cli import main
from odt.config import RANGES, Config, ConfigError
from odt.data.formats import save_npz
from odt.data.trajectories import TrajectoryDataset

RUN = ["run", "--no-progress"]


class _Spaces(gym.Env):
    """An environment odt cannot act in: its spaces are given."""

    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space


gym.register("odt-test/Image-v0", lambda: _Spaces(gym.spaces.Box(0, 255, (8, 8, 3), np.uint8),
                                                  gym.spaces.Box(-1, 1, (2,), np.float32)), max_episode_steps=10)
gym.register("odt-test/Unbounded-v0", lambda: _Spaces(gym.spaces.Box(-1, 1, (3,), np.float32),
                                                      gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)),
             max_episode_steps=10)


def _npz(tmp, obs_dim=17, act_dim=6):
    path = tmp / f"data-{obs_dim}-{act_dim}.npz"
    save_npz(TrajectoryDataset([make_episode(20, obs_dim=obs_dim, act_dim=act_dim)], env_id="HalfCheetah-v5"), path)
    return str(path)


def _run_dir(tmp, obs_dim=None, config=True, config_text=None):
    """A run directory; with obs_dim, holding a pretrained checkpoint of that observation size."""
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    if config:
        Config().save(run / "config.json")
    if config_text is not None:
        (run / "config.json").write_text(config_text)
    if obs_dim is not None:
        from odt.algos.learner import Learner
        from odt.checkpoint import networks_state, save_checkpoint
        from odt.config import OptimSettings
        from odt.models.transformer import DecisionTransformer, ModelSpec
        from odt.scaling import Scaling

        learner = Learner(DecisionTransformer(ModelSpec(obs_dim=obs_dim, act_dim=6, embed_dim=16, n_layer=1, n_head=1)),
                          "odt", OptimSettings(lr=1e-3, weight_decay=0.0, warmup_steps=1, grad_clip=1.0))
        scaling = Scaling(np.zeros(obs_dim), np.ones(obs_dim), -np.ones(6), np.ones(6)).state_dict()
        save_checkpoint(run / "checkpoints" / "pretrained.pt",
                        networks_state(dataclasses.asdict(learner.model.spec), scaling, [learner.state_dict()]))
    return str(run)


def _finished(tmp, config_text=None, summary_text="{}"):
    """A run directory as `odt report` reads it, its config.json or summary.json as given."""
    run = tmp / "done"
    run.mkdir()
    (run / "config.json").write_text(config_text or json.dumps(Config().to_dict()))
    (run / "summary.json").write_text(summary_text)
    return [str(run), "--out", str(tmp / "report")]


def _foreign_grid_point(tmp):
    """A sweep whose single grid point's folder holds a Hugging Face model's config.json."""
    (tmp / "sweep" / "run_s0").mkdir(parents=True)
    (tmp / "sweep" / "run_s0" / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 3}))
    return ["sweep", "--out", str(tmp / "sweep")]


CASES = {
    # presets and settings
    "unknown preset": (lambda t: RUN + ["--preset", "no-such-preset"], "unknown preset 'no-such-preset'"),
    "K = 0": (lambda t: RUN + ["--context-len", "0"], "--context-len must be positive"),
    "negative budget": (lambda t: RUN + ["--online-steps", "-5"], "--online-steps must be >= 0"),
    "negative pretraining": (lambda t: RUN + ["--pretrain-updates", "-1"], "--pretrain-updates must be >= 0"),
    "batch 0": (lambda t: RUN + ["--batch-size", "0"], "--batch-size must be positive"),
    "heads do not divide": (lambda t: RUN + ["--embed-dim", "30", "--n-head", "4"], "divisible by --n-head"),
    "eval context > K": (lambda t: RUN + ["--eval-context", "30"], "must be <= --context-len"),
    "dropout 1.5": (lambda t: RUN + ["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    "lr 0": (lambda t: RUN + ["--lr", "0"], "must be positive"),
    "dt with a Gaussian": (lambda t: RUN + ["--algo", "dt", "--action-head", "gaussian"], "deterministic actor"),
    "odt deterministic": (lambda t: RUN + ["--algo", "odt", "--action-head", "deterministic"], "stochastic"),
    "half a reference": (lambda t: RUN + ["--ref-min-score", "1"], "go together"),
    "gamma > 1": (lambda t: RUN + ["--algo", "vidt", "--gamma", "1.5"], "--gamma must be in (0, 1]"),
    "critic lr 0": (lambda t: RUN + ["--algo", "vidt", "--critic-lr", "0"], "--critic-lr must be positive"),
    "guard 0": (lambda t: RUN + ["--max-bad-updates", "0"], "--max-bad-updates must be positive"),
    "lr NaN": (lambda t: RUN + ["--lr", "nan"], "--lr must be a finite number, got nan"),
    "g_eval NaN": (lambda t: RUN + ["--g-eval", "nan"], "--g-eval must be a finite number"),
    "g_online infinite": (lambda t: RUN + ["--g-online", "inf"], "--g-online must be a finite number"),
    "negative weight decay": (lambda t: RUN + ["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    "negative seed": (lambda t: RUN + ["--seed", "-1"], "--seed must be >= 0"),
    "negative seed, finetune": (lambda t: ["finetune", "--init", "odt:cpu-small", "--seed", "-1"],
                                "--seed must be >= 0"),
    "tau 0": (lambda t: RUN + ["--tau", "0"], "--tau must be in (0, 1]"),
    "iql temperature NaN": (lambda t: RUN + ["--iql-temperature", "nan"], "--iql-temperature must be a finite"),
    "two presets": (lambda t: RUN + ["--preset", "cpu-small", "--preset=cpu-vidt"],
                    "--preset is given 2 times (cpu-small, cpu-vidt); give one preset"),
    # the parser
    "not a number": (lambda t: RUN + ["--lr", "abc"], "Error parsing --lr"),
    "unknown flag": (lambda t: RUN + ["--lrr", "3"], "Unrecognized options: --lrr"),
    "unknown algorithm": (lambda t: RUN + ["--algo", "ppo"], "invalid choice 'ppo'"),
    "unknown command": (lambda t: ["frobnicate"], "unknown command 'frobnicate'"),
    "data without subcommand": (lambda t: ["data"], "needs a subcommand"),
    "toy without task": (lambda t: ["toy"], "needs the task"),
    # environments and datasets
    "unknown environment": (lambda t: RUN + ["--env", "NoSuchEnv-v0"], "unknown environment 'NoSuchEnv-v0'"),
    "missing dataset": (lambda t: RUN + ["--dataset", "/nonexistent/data.npz"], "does not exist"),
    "dataset of another env": (lambda t: RUN + ["--dataset", _npz(t)], "observation dimension 17 but Hopper-v5"),
    "action dim": (lambda t: RUN + ["--dataset", _npz(t, 11, 2)], "action dimension 2 but Hopper-v5 has 3"),
    "unknown Minari id": (lambda t: RUN + ["--dataset", "nobody/nothing-v0"], "not in the local store"),
    "discrete observations": (lambda t: RUN + ["--env", "Taxi-v4"], "odt needs flat Box observations"),
    "discrete actions, replay data": (lambda t: ["data", "generate", "--env", "CartPole-v1", "--quality", "medium-replay",
                                                 "--out", "gen/x-v0"], "PPO, which keeps none"),
    "discrete actions, TD3": (lambda t: RUN + ["--env", "CartPole-v1", "--algo", "vidt"],
                              "--algo vidt needs continuous actions"),
    "image observations": (lambda t: RUN + ["--env", "odt-test/Image-v0"], "odt needs flat Box observations"),
    "unbounded actions": (lambda t: RUN + ["--env", "odt-test/Unbounded-v0"], "is unbounded; odt rescales actions"),
    "embedded data of another env": (lambda t: RUN + ["--dataset", "odt/walker2d-medium", "--env", "Hopper-v5"],
                                     "dataset odt/walker2d-medium is recorded in Walker2d-v5 (observation/action "
                                     "dimensions 17/6), but Hopper-v5 has 11/3; give --env Walker2d-v5"),
    "embedded near miss": (lambda t: ["data", "inspect", "odt/hopper-mediun"],
                           "no embedded dataset 'odt/hopper-mediun'; did you mean odt/hopper-medium?"),
    "embedded near miss, run": (lambda t: RUN + ["--dataset", "odt/walker2d-medum"],
                                "did you mean odt/walker2d-medium?"),
    "no target for generation": (lambda t: ["data", "generate", "--env", "Pendulum-v1", "--quality", "medium",
                                            "--out", "gen/x-v0"], "--target-return"),
    # run directories, configs and checkpoints
    "finetune without init": (lambda t: ["finetune"], "needs --init"),
    "missing run directory": (lambda t: ["finetune", "--init", str(t / "nope"), "--no-progress"], "does not exist"),
    "run without checkpoints": (lambda t: ["finetune", "--init", _run_dir(t), "--no-progress"], "no checkpoint in"),
    "checkpoint of another shape": (lambda t: ["finetune", "--init", _run_dir(t, obs_dim=17), "--no-progress"],
                                    "is for observation/action dimensions 17/6"),
    "eval of a non-run": (lambda t: ["eval", "--run", str(t)], "not a run directory"),
    "eval episodes 0": (lambda t: ["eval", "--run", _run_dir(t), "--episodes", "0"], "--episodes must be positive"),
    "eval threads -1": (lambda t: ["eval", "--run", _run_dir(t), "--threads", "-1"], "--threads >= 0"),
    "eval seed -1": (lambda t: ["eval", "--run", _run_dir(t), "--seed", "-1"], "--seed >= 0, got 10, 0 and -1"),
    "eval target NaN": (lambda t: ["eval", "--run", _run_dir(t), "--target", "nan"], "--target must be a finite"),
    "sweep cpus NaN": (lambda t: ["sweep", "--out", str(t / "s"), "--cpus-per-run", "nan"],
                       "--cpus-per-run must be positive"),
    "generation target NaN": (lambda t: ["data", "generate", "--env", "Hopper-v5", "--quality", "medium", "--out",
                                         "gen/x-v0", "--target-return", "nan"], "--target-return must be a finite"),
    "broken config": (lambda t: ["eval", "--run", _run_dir(t, config_text="{not json")], "cannot read config"),
    "config with unknown key": (lambda t: ["eval", "--run", _run_dir(t, config_text=json.dumps({"foo": 1}))],
                                "unknown setting(s) foo"),
    "config a list": (lambda t: ["eval", "--run", _run_dir(t, config_text="[]")], "settings must be an object"),
    "config a string number": (lambda t: ["eval", "--run", _run_dir(t, config_text=json.dumps({"batch_size": "64"}))],
                               'batch_size must be an integer, got "64"; correct the file'),
    "config a wrong choice": (lambda t: ["eval", "--run", _run_dir(t, config_text=json.dumps({"algo": "ppo"}))],
                              "algo must be one of 'dt', 'odt'"),
    "flag against init": (lambda t: ["finetune", "--init", _run_dir(t, obs_dim=11), "--embed-dim", "32"],
                          "--embed-dim 32 contradicts the pretrained model"),
    "algo against init": (lambda t: ["finetune", "--init", _run_dir(t, obs_dim=11), "--algo", "dt"],
                          "--algo dt contradicts the pretrained model"),
    "algo against a shipped model": (lambda t: ["finetune", "--init", "odt:cpu-vidt", "--preset", "cpu-vidt",
                                                "--algo", "odt"], "which has algo vidt; drop --algo"),
    "flag against a shipped model": (lambda t: ["finetune", "--init", "odt:cpu-vidt", "--embed-dim=256"],
                                     "--embed-dim 256 contradicts the pretrained model"),
    "report of a summary list": (lambda t: ["report", *_finished(t, summary_text="[]")], "not the JSON object"),
    "report of a config null": (lambda t: ["report", *_finished(t, config_text="null")], "not the JSON object"),
    "report of a summary number": (lambda t: ["report", *_finished(t, summary_text='{"final": {"return_mean": "x"}}')],
                                   "its 'final' entry is not an evaluation"),
    "sweep of a foreign folder": (lambda t: _foreign_grid_point(t), "holds a config.json that is not an odt run's"),
}


# What "nothing written" leaves out: a shipped model unpacks into the cache, which later commands read.
CACHE_OF_MODELS = (("cache",), ("cache", "models"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    # A cache of its own, empty: no case may generate a dataset (minutes) before it answers.
    monkeypatch.setenv("ODT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # nothing may be written, and certainly not into the repository
    make, needle = CASES[case]
    args = make(tmp_path)

    def files():  # the minari library creates its (empty) store when asked what it holds
        return sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")
                      if "minari" not in p.parts and p.relative_to(tmp_path).parts[:2] not in CACHE_OF_MODELS)

    before = files()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("odt: error: ") and needle in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert files() == before  # nothing written


def test_there_are_at_least_25():
    assert len(CASES) >= 25


def _numeric(hint) -> bool:
    return hint in (int, float) or any(a in (int, float) for a in typing.get_args(hint))


NUMERIC = sorted(name for name, hint in typing.get_type_hints(Config).items()
                 if name in {f.name for f in dataclasses.fields(Config)} and _numeric(hint))


def test_every_numeric_setting_declares_its_range():
    assert set(NUMERIC) == set(RANGES)


@pytest.mark.parametrize("name", NUMERIC)
def test_every_numeric_setting_refuses_nan_infinity_and_text_from_any_source(name):
    """config.json and odt.train reach Config.from_dict, flags and presets Config.validate: each
    refuses what a flag parser would have, and what no range admits."""
    refusal = (f"{name} must be an integer" if typing.get_type_hints(Config)[name] is int
               else f"--{name.replace('_', '-')} must be a finite number")
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ConfigError, match=refusal):
            dataclasses.replace(Config(), **{name: value}).validate()
        with pytest.raises(ConfigError, match=refusal):
            Config.from_dict({name: value}).validate()
    with pytest.raises(ConfigError, match=f"{name} must be an? (integer|number)"):
        Config.from_dict({name: "1"})
