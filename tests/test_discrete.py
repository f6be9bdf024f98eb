"""Discrete actions: a categorical policy from the same model, learner, loop and buffer. Its math
against independent formulas, a return-conditioned choice, the environment's edge, the data's
checks, the refusals, and a CartPole run end to end (kill, resume, eval, both exports)."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import make_buffer, step

from odt.algos.learner import Learner
from odt.algos.losses import dt_loss, odt_loss
from odt.checkpoint import upgrade
from odt.cli import main
from odt.config import OptimSettings
from odt.data.formats import save_npz
from odt.data.generate import collect
from odt.data.trajectories import Episode, TrajectoryDataset
from odt.models.heads import Categorical, default_target_entropy
from odt.models.transformer import DecisionTransformer, ModelSpec
from odt.policy import Policy
from odt.scaling import Scaling


def _one_hot(index, n):
    return F.one_hot(torch.as_tensor(index), n).float()


def test_the_categorical_matches_its_formulas():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 3)
    d = Categorical(logits)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(d.entropy(), -(p * p.log()).sum(-1))  # exact, no sampling
    index = torch.randint(3, (5, 4))
    torch.testing.assert_close(d.log_prob(_one_hot(index, 3)), p.log().gather(-1, index[..., None])[..., 0])
    assert torch.equal(d.mode(), _one_hot(logits.argmax(-1), 3))
    draws = Categorical(torch.tensor([[0.0, 1.0, -1.0]]).expand(40_000, 3)).sample(torch.Generator().manual_seed(0))
    assert torch.equal(draws.sum(-1), torch.ones(40_000))  # one-hot
    np.testing.assert_allclose(draws.mean(0), torch.softmax(torch.tensor([0.0, 1.0, -1.0]), -1), atol=0.01)


def test_dt_takes_the_cross_entropy_and_odt_the_exact_entropy():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4)
    index = torch.randint(4, (2, 3))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    batch = type("B", (), {"actions": _one_hot(index, 4), "mask": mask})
    loss, entropy, metrics = dt_loss(Categorical(logits), batch)
    ce = F.cross_entropy(logits.reshape(-1, 4), index.reshape(-1), reduction="none").reshape(2, 3)
    assert entropy is None and loss.item() == pytest.approx(float((ce * mask).sum() / mask.sum()), rel=1e-6)
    lam = torch.tensor(0.3)
    loss, entropy, m = odt_loss(Categorical(logits), batch, lam)
    p = torch.softmax(logits, -1)
    h = -(p * p.log()).sum(-1)
    assert entropy.item() == pytest.approx(float((h * mask).sum() / mask.sum()), rel=1e-6)
    assert loss.item() == pytest.approx(m["nll"].item() - 0.3 * entropy.item(), rel=1e-6)
    assert default_target_entropy("categorical", 4) == pytest.approx(0.5 * math.log(4))
    assert default_target_entropy("tanh_gaussian", 4) == -4.0


def test_actions_cross_the_environments_edge_as_indices():
    s = Scaling.for_discrete(np.zeros(2), np.ones(2), 3)
    assert not s.unit_actions
    np.testing.assert_array_equal(s.to_unit(np.array([[2.0], [0.0]])), [[0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(s.from_unit(np.array([[0.1, 0.7, 0.2], [1, 0, 0]])), [1, 0])
    back = Scaling.unit(2, 3)
    back.load_state_dict(s.state_dict())
    assert back.discrete and back.act_low.shape == (3,)
    old = {"format": 2, "spec": {}, "scaling": Scaling.unit(2, 3).state_dict(), "ensemble": {"learners": []}, "run": {}}
    del old["scaling"]["discrete"]
    assert upgrade(old)["scaling"]["discrete"] is False  # every earlier run's actions were continuous


@pytest.mark.parametrize("algo", ["dt", "odt"])
def test_a_discrete_policy_follows_the_return_it_is_asked_for(algo):
    """One-step episodes: action 1 earns 1, action 0 earns 0, each half the data. Conditioned on a
    return of 1 the trained policy takes action 1; on 0, action 0."""
    rng = np.random.default_rng(0)
    index = rng.integers(2, size=256)
    torch.manual_seed(0)
    spec = ModelSpec(obs_dim=1, act_dim=2, embed_dim=32, n_layer=1, n_head=1, dropout=0.0, context_len=1,
                     action_head="categorical")
    learner = Learner(DecisionTransformer(spec), algo, OptimSettings(lr=3e-3, weight_decay=0.0, warmup_steps=1))
    buf = make_buffer(256, obs_dim=1, act_dim=2, rtg_scale=1.0)
    buf.fill([Episode(np.zeros((1, 1), np.float32), _one_hot([i], 2).numpy(), np.array([float(i)], np.float32),
                      terminated=True) for i in index])
    for _ in range(150):
        m = step(learner, buf.sample(64, 1, rng))
    assert m["nll"] < 0.1
    policy = Policy(learner.model, Scaling.for_discrete(np.zeros(1), np.ones(1), 2), 1.0, 1)
    for target, expected in ((1.0, 1), (0.0, 0)):
        policy.reset(target)
        assert policy.act(np.zeros(1, np.float32)) == expected


# --- the data's checks, and the refusals -------------------------------------------------------

def _npz(tmp_path, actions, name="d.npz"):
    n = len(actions)
    path = tmp_path / name
    np.savez(path, observations=np.zeros((n, 4), np.float32), actions=np.asarray(actions),
             rewards=np.ones(n, np.float32), terminals=np.eye(1, n, n - 1, dtype=bool)[0],
             timeouts=np.zeros(n, bool))
    return path


TINY = ["--env", "CartPole-v1", "--preset", "cpu-small", "--embed-dim", "16", "--n-layer", "1", "--n-head", "1",
        "--batch-size", "8", "--pretrain-updates", "4", "--online-steps", "200", "--updates-per-round", "2",
        "--eval-episodes", "2", "--eval-every", "1", "--g-eval", "500", "--g-online", "1000", "--threads", "1",
        "--no-progress", "--checkpoint-every", "1"]


@pytest.mark.parametrize("actions,needle", [
    ([0, 1, 2, 1], "episode 0, step 2: action 2 is outside [0, 2)"),
    ([0, 1, 0.5, 1], "episode 0, step 2: action 0.5 is not a whole number"),
    (np.zeros((4, 3)), "has actions 3 wide, but CartPole-v1's are discrete"),
])
def test_discrete_data_is_checked_in_one_line(actions, needle, tmp_path, capsys):
    data = _npz(tmp_path, actions)
    assert main(["run", *TINY, "--dataset", str(data), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags,needle", [
    (["--algo", "vidt"], "--algo vidt needs continuous actions"),
    (["--algo", "odt-td3"], "--algo odt-td3 needs continuous actions"),
    (["--action-head", "tanh_gaussian"], "actions are discrete"),
    (["--noise-std", "0.1"], "explore by sampling"),
    (["--explore-action", "mean"], "explore by sampling"),
])
def test_what_discrete_actions_cannot_take_is_refused_before_any_data(flags, needle, tmp_path, capsys):
    assert main(["run", *TINY, "--dataset", str(tmp_path / "missing.npz"), *flags, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and not (tmp_path / "r").exists()


def test_other_commands_refuse_discrete_actions_in_one_line(tmp_path, capsys):
    assert main(["baseline", "sac", *TINY, "--dataset", "none", "--out", str(tmp_path / "s")]) == 2
    assert "--algo sac needs continuous actions" in capsys.readouterr().err
    assert main(["run", *TINY, "--tasks", "CartPole-v1=x.npz", "Hopper-v5=odt/hopper-random", "--out",
                 str(tmp_path / "t")]) == 2
    assert "--tasks pads flat observations and continuous actions" in capsys.readouterr().err
    assert main(["run", *TINY, "--env", "Hopper-v5", "--action-head", "categorical", "--dataset", "odt/hopper-random",
                 "--out", str(tmp_path / "h")]) == 2
    assert "--action-head categorical is for discrete actions" in capsys.readouterr().err


# --- a CartPole run, end to end --------------------------------------------------------------

@pytest.fixture(scope="module")
def cartpole_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("cartpole") / "random.npz"
    save_npz(collect("CartPole-v1", 2000, 0, None, name="cartpole-random", log=lambda line: None), path)
    return path


@pytest.mark.parametrize("algo", ["dt", "odt"])
def test_a_cartpole_run_is_killed_resumed_evaluated_and_exported(algo, cartpole_npz, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "odt.cli", "run", *TINY, "--algo", algo, "--dataset", str(cartpole_npz),
            "--online-steps", "600", "--out", str(run)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 300
    while (not (run / "metrics.jsonl").is_file() or (run / "metrics.jsonl").read_text().count('"event": "round"') < 2) \
            and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["run", "--resume", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert cfg["action_head"] == "categorical" and summary["online_steps"] == 600
    assert "normalized_mean" in summary["final"]  # CartPole's references: random actions, the episode cap
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["nll"]) for r in rows if "nll" in r) and any(r.get("event") == "round" for r in rows)
    assert main(["eval", "--run", str(run), "--episodes", "2"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "p.pt")]) == 0
    policy = Policy.load(run)
    policy.reset(500.0, n=3)
    obs = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32) * 0.05
    expected = policy.act(obs)
    module = torch.jit.load(str(tmp_path / "p.pt"))
    C = cfg["eval_context"]
    action = module(torch.as_tensor(obs), torch.zeros(3), torch.full((3,), 500.0), torch.zeros(3, C, 4),
                    torch.zeros(3, C, 2), torch.zeros(3, C, 1), torch.zeros(3, dtype=torch.int64))[0]
    assert action.dtype == torch.int64 and action.tolist() == list(expected)  # the index, as the policy's


def test_the_embedded_discrete_dataset_is_cartpoles(capsys):
    from odt.data.sources import load_dataset

    ds = load_dataset("odt/cartpole-medium")
    assert isinstance(ds, TrajectoryDataset) and ds.n_transitions == 100_000 and ds.act_dim == 1
    assert set(np.unique(np.concatenate([e.actions[:, 0] for e in ds.episodes]))) == {0.0, 1.0}
    assert 140 < ds.returns().mean() < 200  # a third of the cap, as the recipe trained it


def test_a_pretrained_discrete_model_finetunes_from_its_run(cartpole_npz, tmp_path):
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    assert main(["pretrain", *TINY, "--dataset", str(cartpole_npz), "--out", str(pre)]) == 0
    assert main(["finetune", *TINY, "--dataset", str(cartpole_npz), "--init", str(pre), "--out", str(ft)]) == 0
    assert json.loads((ft / "config.json").read_text())["action_head"] == "categorical"


def test_an_ensemble_of_discrete_policies_is_refused(tmp_path, capsys):
    assert main(["run", *TINY, "--dataset", str(tmp_path / "missing.npz"), "--ensemble", "2", "--out",
                 str(tmp_path / "r")]) == 2
    assert "discrete actions have no mean" in capsys.readouterr().err



def test_a_minigrid_task_is_recorded_into_minari_and_finetuned(tmp_path, monkeypatch, capsys):
    """MiniGrid through the real library: the agent's 7x7 view comes flat (147 codes, float32),
    `odt data generate` records it into a Minari store, and a run pretrains on that dataset,
    finetunes and evaluates with the categorical head over MiniGrid's 7 actions."""
    from odt.envs.make import make_env

    env = make_env("MiniGrid-Empty-5x5-v0")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (147,) and obs.dtype == np.float32 and env.action_space.n == 7
    assert set(np.unique(obs)) <= set(range(11))  # object, colour and state codes
    env.close()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.chdir(tmp_path)
    assert main(["data", "generate", "--env", "MiniGrid-Empty-5x5-v0", "--quality", "random", "--transitions", "600",
                 "--out", "minigrid/empty-random-v0"]) == 0
    run = tmp_path / "run"
    assert main(["run", *TINY, "--env", "MiniGrid-Empty-5x5-v0", "--dataset", "minigrid/empty-random-v0",
                 "--g-eval", "1", "--g-online", "2", "--online-steps", "300", "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert cfg["action_head"] == "categorical" and summary["online_steps"] == 300
    assert 0.0 <= summary["final"]["return_mean"] <= 1.0  # MiniGrid pays at most 1, at the goal
    assert main(["eval", "--run", str(run), "--episodes", "2"]) == 0
