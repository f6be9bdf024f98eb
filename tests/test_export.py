"""`odt export`: the exported file, loaded without odt, acts as Policy.act over whole episodes."""
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from odt.cli import main
from odt.policy import load_policy

TINY = ["--preset", "cpu-small", "--embed-dim", "32", "--n-layer", "2", "--batch-size", "8", "--pretrain-updates", "20",
        "--eval-episodes", "1", "--threads", "1", "--no-progress", "--eval-context", "4", "--context-len", "4",
        "--dropout", "0.0"]

# The README's example, run in a process where importing odt fails: the file is self-contained.
PLAIN_LOOP = """
import sys; sys.modules["odt"] = None
import json, gymnasium as gym, numpy as np, torch
path, steps = sys.argv[1], int(sys.argv[2])
extra = {"odt.json": ""}
policy = torch.jit.load(path, _extra_files=extra)
meta = json.loads(extra["odt.json"])
env = gym.make(meta["env"])
obs, _ = env.reset(seed=3)
C, S, A = meta["context"], meta["obs_dim"], meta["act_dim"]
states, actions, rtg = torch.zeros(1, C, S), torch.zeros(1, C, A), torch.zeros(1, C, 1)
t, reward, target = torch.zeros(1, dtype=torch.int64), torch.zeros(1), torch.tensor([meta["g_eval"]])
total = 0.0
for _ in range(steps):
    with torch.no_grad():
        action, states, actions, rtg, t = policy(torch.as_tensor(obs, dtype=torch.float32)[None], reward,
                                                 target, states, actions, rtg, t)
    obs, r, terminated, truncated, _ = env.step(action[0].numpy())
    reward, total = torch.tensor([float(r)]), total + r
    if terminated or truncated:
        break
print(json.dumps({"steps": int(t[0]), "return": total}))
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, hopper_npz):
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["pretrain", *TINY, "--dataset", str(hopper_npz), "--out", str(out)]) == 0
    return out


def _episode_actions(run_dir, step_fn, seed=5, max_steps=60):
    """Drive Hopper with Policy.act; at every step also ask ``step_fn`` (the exported policy, fed
    the same observation and reward). Both action sequences over the episode."""
    policy = load_policy(run_dir, "final")
    g = json.loads((run_dir / "config.json").read_text())["g_eval"]
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=seed)
    policy.reset(g)
    state = None
    ours, theirs, reward = [], [], None
    for _ in range(max_steps):
        a = policy.act(obs, reward)
        b, state = step_fn(obs, 0.0 if reward is None else reward, g, state)
        ours.append(a), theirs.append(b)
        obs, reward, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            break
    env.close()
    return np.array(ours), np.array(theirs)


def _torch_step(fn, C, S, A):
    def step(obs, reward, g, state):
        if state is None:
            state = (torch.zeros(1, C, S), torch.zeros(1, C, A), torch.zeros(1, C, 1), torch.zeros(1, dtype=torch.int64))
        with torch.no_grad():
            a, *state = fn(torch.as_tensor(obs, dtype=torch.float32)[None], torch.tensor([reward], dtype=torch.float32),
                           torch.tensor([g], dtype=torch.float32), *state)
        return a[0].numpy(), state
    return step


def test_torchscript_export_acts_as_the_policy_over_an_episode(run_dir, tmp_path):
    out = tmp_path / "policy.pt"
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(out)]) == 0
    extra = {"odt.json": ""}
    fn = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["odt.json"])
    assert (meta["env"], meta["context"], meta["obs_dim"], meta["act_dim"]) == ("Hopper-v5", 4, 11, 3)
    ours, theirs = _episode_actions(run_dir, _torch_step(fn, 4, 11, 3))
    assert len(ours) > 4  # the window slid: the episode outlived the context of 4
    np.testing.assert_allclose(theirs, ours, atol=1e-5)
    assert np.abs(np.diff(ours, axis=0)).max() > 1e-3  # the actions move, so the comparison means something

    # Without odt in the process, the README's plain Gymnasium loop runs the file.
    p = subprocess.run([sys.executable, "-c", PLAIN_LOOP, str(out), "30"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["steps"] >= 1


def test_onnx_export_acts_as_the_policy_over_an_episode(run_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "policy.onnx"
    assert main(["export", str(run_dir), "--format", "onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    assert meta["context"] == 4 and [i.name for i in session.get_inputs()] == meta["inputs"]

    def step(obs, reward, g, state):
        if state is None:
            state = (np.zeros((1, 4, 11), np.float32), np.zeros((1, 4, 3), np.float32), np.zeros((1, 4, 1), np.float32),
                     np.zeros(1, np.int64))
        feed = dict(zip(meta["inputs"], (np.asarray(obs, np.float32)[None], np.array([reward], np.float32),
                                         np.array([g], np.float32), *state)))
        a, *state = session.run(None, feed)
        return a[0], state

    ours, theirs = _episode_actions(run_dir, step)
    np.testing.assert_allclose(theirs, ours, atol=1e-4)

    # A batch of 3 rows whose episodes start at steps 0, 2 and 5 of the batch (a row restarted by
    # zeroing its state): each row acts as it would alone, past the window of 4 and before it.
    rng = np.random.default_rng(0)
    T, starts = 12, [0, 2, 5]
    obs = rng.normal(size=(T, 3, 11)).astype(np.float32)
    rew = rng.uniform(0, 3, (T, 3)).astype(np.float32)

    def fresh(n):
        return [np.zeros((n, 4, 11), np.float32), np.zeros((n, 4, 3), np.float32), np.zeros((n, 4, 1), np.float32),
                np.zeros(n, np.int64)]

    state, batched = fresh(3), []
    for k in range(T):
        for i, s0 in enumerate(starts):
            if k == s0:
                for part, zero in zip(state, fresh(1)):
                    part[i] = zero[0]
        a, *state = session.run(None, dict(zip(meta["inputs"], (obs[k], rew[k], np.full(3, 3600, np.float32), *state))))
        batched.append(a)
    for i, s0 in enumerate(starts):
        alone = fresh(1)
        for k in range(s0, T):
            a, *alone = session.run(None, dict(zip(meta["inputs"], (obs[k, i:i + 1], rew[k, i:i + 1],
                                                                      np.full(1, 3600, np.float32), *alone))))
            np.testing.assert_allclose(a[0], batched[k][i], atol=1e-5)


def test_export_refuses_to_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "policy.pt"
    out.write_text("keep me")
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.pt")]) == 2


def test_an_ensemble_exports_as_its_mean_action(hopper_npz, tmp_path):
    run = tmp_path / "ens"
    assert main(["pretrain", *TINY, "--ensemble", "2", "--dataset", str(hopper_npz), "--out", str(run)]) == 0
    out = tmp_path / "ens.pt"
    assert main(["export", str(run), "--out", str(out)]) == 0
    ours, theirs = _episode_actions(run, _torch_step(torch.jit.load(str(out)), 4, 11, 3))
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_the_torchscript_graph_holds_no_device(tmp_path):
    """A trace fixes every tensor made with ``device=``: such a constant sends a GPU's inputs to the
    CPU mid-graph. The exported step makes its positions from its inputs instead."""
    assert main(["export", "odt:cpu-small", "--out", str(tmp_path / "p.pt")]) == 0
    graph = str(torch.jit.load(str(tmp_path / "p.pt")).inlined_graph)
    assert "aten::cumsum" in graph  # the positions, from the inputs
    assert 'value="cpu"' not in graph and "Device" not in graph


@pytest.mark.slow
def test_the_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py, the first command on a lent GPU, at its CPU size: every step runs
    (a tiny run killed and resumed, eval, both exports on the device's inputs, the update alone and
    as a round, a compiled step, the projection), so that the script cannot rot between leases."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    p = subprocess.run([sys.executable, str(script), "--device", "cpu", "--tiny",
                        "--out", str(tmp_path / "check")], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    steps = json.loads((tmp_path / "check" / "summary.json").read_text())["steps"]
    assert set(steps) == {"environment", "run odt", "run vidt", "update", "compile", "projection", "atari"}
    for algo in ("odt", "vidt"):
        run = steps[f"run {algo}"]
        assert run["killed_after_rounds"] >= 1 and run["resume_exit"] == 0 and run["resolved"] == ["cpu", "fp32"]
        assert run["torchscript"]["max_abs_diff"] < 1e-5 and run["onnx"]["max_abs_diff"] < 1e-4
    assert steps["update"]["odt fp32"]["round_ms_per_update"] > 0 and steps["projection"]["runs"]
    assert steps["atari"]["round_ms_per_update"] > 0
