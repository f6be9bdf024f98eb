"""Every bad input a user can give ends in exit code 2 and one line naming the problem, with no
traceback: command-line arguments, presets, configs, datasets, run directories and checkpoints."""
import dataclasses
import json

import numpy as np
import pytest
from helpers import make_episode

from odt.cli import main
from odt.config import Config
from odt.data.formats import save_npz
from odt.data.trajectories import TrajectoryDataset

RUN = ["run", "--no-progress"]


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
    "gamma > 1": (lambda t: RUN + ["--algo", "vidt", "--gamma", "1.5"], "--gamma and --tau must be in (0, 1]"),
    "critic lr 0": (lambda t: RUN + ["--algo", "vidt", "--critic-lr", "0"], "--critic-lr must be positive"),
    "guard 0": (lambda t: RUN + ["--max-bad-updates", "0"], "--max-bad-updates must be positive"),
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
    "no target for generation": (lambda t: ["data", "generate", "--env", "CartPole-v1", "--quality", "medium",
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
    "broken config": (lambda t: ["eval", "--run", _run_dir(t, config_text="{not json")], "cannot read config"),
    "config with unknown key": (lambda t: ["eval", "--run", _run_dir(t, config_text=json.dumps({"foo": 1}))],
                                "unknown setting(s) foo"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.chdir(tmp_path)  # nothing may be written, and certainly not into the repository
    make, needle = CASES[case]
    args = make(tmp_path)
    def files():  # the minari library creates its (empty) store when asked what it holds
        return sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "minari" not in p.parts)

    before = files()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("odt: error: ") and needle in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert files() == before  # nothing written


def test_there_are_at_least_25():
    assert len(CASES) >= 25
