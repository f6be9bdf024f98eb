"""Dataset sources built with the real h5py and minari libraries, no downloads."""

import gymnasium as gym
import h5py
import numpy as np
import pytest

from odt.config import ConfigError
from odt.data.sources import load_dataset, save_npz
from odt.data.trajectories import TrajectoryDataset

from helpers import make_episode


def _flat(n=10, obs_dim=3, act_dim=2):
    rng = np.random.default_rng(0)
    return dict(observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
                actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                rewards=rng.normal(size=n).astype(np.float32),
                terminals=np.eye(1, n, 3, dtype=bool)[0], timeouts=np.eye(1, n, 6, dtype=bool)[0])


def test_d4rl_hdf5_splits_at_terminals_and_timeouts(tmp_path):
    a = _flat()
    path = tmp_path / "d.hdf5"
    with h5py.File(path, "w") as f:
        for k, v in a.items():
            f[k] = v
    ds = load_dataset(str(path))
    assert [len(e) for e in ds.episodes] == [4, 3, 3]
    assert [(e.terminated, e.truncated) for e in ds.episodes] == [(True, False), (False, True), (False, True)]
    assert ds.n_transitions == 10
    np.testing.assert_allclose(np.concatenate([e.rewards for e in ds.episodes]), a["rewards"])


def test_npz_round_trip(tmp_path):
    eps = [make_episode(5, seed=1), make_episode(3, seed=2)]
    eps[0].terminated, eps[0].truncated = True, False
    for e in eps:
        e.final_observation = np.ones(3, np.float32)
    path = tmp_path / "d.npz"
    save_npz(TrajectoryDataset(eps, env_id="Hopper-v5"), path)
    ds = load_dataset(str(path))
    assert ds.env_id == "Hopper-v5" and [len(e) for e in ds.episodes] == [5, 3]
    assert [e.terminated for e in ds.episodes] == [True, False]
    for a, b in zip(eps, ds.episodes):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.final_observation, b.final_observation)


@pytest.mark.parametrize("mutate,needle", [
    (lambda a: a.pop("timeouts"), "lacks the key(s) timeouts"),
    (lambda a: a.update(rewards=a["rewards"][:-1]), "rows but 'rewards' has 9"),
    (lambda a: a["observations"].__setitem__((2, 1), np.nan), "NaN or infinite"),
])
def test_bad_files_are_named(tmp_path, mutate, needle):
    a = _flat()
    mutate(a)
    path = tmp_path / "bad.npz"
    np.savez(path, **a)
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(str(path))


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez(path, **_flat())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="truncated"):
        load_dataset(str(path))


def test_minari_dataset_from_the_local_store(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    from minari.data_collector.episode_buffer import EpisodeBuffer

    env = gym.make("Hopper-v5")
    buffers = []
    for seed in range(2):
        obs, _ = env.reset(seed=seed)
        o, a, r, te, tr = [obs], [], [], [], []
        for t in range(30):
            act = env.action_space.sample()
            obs, rew, term, trunc, _ = env.step(act)
            trunc = trunc or t == 29
            o.append(obs), a.append(act), r.append(rew), te.append(term), tr.append(trunc)
            if term or trunc:
                break
        buffers.append(EpisodeBuffer(id=seed, seed=seed, observations=np.array(o), actions=np.array(a),
                                     rewards=r, terminations=te, truncations=tr, infos={}))
    minari.create_dataset_from_buffers("test/hopper/tiny-v0", buffers, env="Hopper-v5", eval_env="Hopper-v5",
                                      algorithm_name="random", author="odt tests",
                                      author_email="tests@odt.invalid", description="two random episodes")
    ds = load_dataset("test/hopper/tiny-v0")
    assert ds.env_id == "Hopper-v5" and len(ds.episodes) == 2 and ds.obs_dim == 11 and ds.act_dim == 3
    with pytest.raises(ConfigError, match="test/hopper/tiny-v0"):  # the error lists the local ids
        load_dataset("test/hopper/missing-v0")


def test_inspect_figures_equal_independent_ones(hopper_npz):
    import json as _json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "odt.cli", "data", "inspect", str(hopper_npz), "--json"],
                       capture_output=True, text=True, check=True)
    d = _json.loads(p.stdout)
    raw = np.load(hopper_npz)
    ends = np.flatnonzero(raw["terminals"] | raw["timeouts"])
    bounds = np.concatenate([[0], ends + 1])
    if bounds[-1] != len(raw["rewards"]):
        bounds = np.append(bounds, len(raw["rewards"]))
    returns = np.array([raw["rewards"][a:b].sum(dtype=np.float64) for a, b in zip(bounds[:-1], bounds[1:])])
    assert d["n_episodes"] == len(returns) and d["n_transitions"] == len(raw["rewards"]) == 3000
    assert (d["obs_dim"], d["act_dim"], d["env_id"]) == (11, 3, "Hopper-v5")
    for key, value in [("return_mean", returns.mean()), ("return_std", returns.std()),
                       ("return_min", returns.min()), ("return_max", returns.max())]:
        assert d[key] == pytest.approx(value, rel=1e-5), key


def test_actions_outside_the_bounds_are_refused(tmp_path):
    from odt.data.sources import check_matches_env

    eps = [make_episode(5, obs_dim=11, act_dim=3, seed=1)]
    env = gym.make("Hopper-v5")
    check_matches_env(TrajectoryDataset(eps, name="ok"), env)  # uniform in [-1, 1]: fine
    eps[0].actions[2, 1] = 1.5
    with pytest.raises(ConfigError, match="outside Hopper-v5's bounds"):
        check_matches_env(TrajectoryDataset(eps, name="bad"), env)
