"""Dataset sources, built inside the tests with the real h5py and minari libraries (no downloads):
every format, every validation error, and inspection figures against independent ones."""
import json

import gymnasium as gym
import h5py
import numpy as np
import pytest
from helpers import make_episode

from odt.cli import main
from odt.config import ConfigError
from odt.data.formats import save_npz
from odt.data.sources import check_matches_env, load_dataset
from odt.data.trajectories import TrajectoryDataset


@pytest.fixture(autouse=True)
def _stores(tmp_path, monkeypatch):
    """A private Minari store and odt cache for every test."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("ODT_CACHE", str(tmp_path / "cache"))


def _flat(n=10, obs_dim=3, act_dim=2, ends=((3, "t"), (6, "o")), seed=0):
    """D4RL-style arrays; episodes end at the given rows by terminal ('t') or timeout ('o'), and
    whatever follows the last end is a partial episode."""
    rng = np.random.default_rng(seed)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    for row, kind in ends:
        (terminals if kind == "t" else timeouts)[row] = True
    return dict(observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
                next_observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
                actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                rewards=rng.normal(size=n).astype(np.float32), terminals=terminals, timeouts=timeouts)


def _write_hdf5(path, arrays, infos=True):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
        if infos:  # D4RL files carry infos/*; odt reads past them
            f["infos/qpos"] = np.zeros((len(arrays["rewards"]), 2))
    return path


def _hopper_episodes(n_episodes=3, max_steps=40, seed=0):
    """Real Hopper-v5 episodes with uniform actions: (obs incl. the last, actions, rewards, terminated)."""
    env = gym.make("Hopper-v5")
    env.action_space.seed(seed)
    out = []
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        o, a, r, term = [obs], [], [], False
        for _ in range(max_steps):
            act = env.action_space.sample()
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew)
            if term or trunc:
                break
        out.append((np.array(o), np.array(a), np.array(r), bool(term)))
    return out


def _write_minari(dataset_id, episodes, **kwargs):
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers = []
    for i, (o, a, r, term) in enumerate(episodes):
        last = np.arange(len(r)) == len(r) - 1
        buffers.append(EpisodeBuffer(id=i, seed=i, observations=o, actions=a, rewards=r,
                                     terminations=last & term, truncations=last & (not term), infos={}))
    return minari.create_dataset_from_buffers(dataset_id, buffers, env="Hopper-v5", eval_env="Hopper-v5",
                                             algorithm_name="random", author="odt tests",
                                             author_email="tests@odt.invalid", description="test data", **kwargs)


# --- sources --------------------------------------------------------------------------

def test_d4rl_hdf5_splits_at_terminals_and_timeouts(tmp_path):
    a = _flat()
    ds = load_dataset(str(_write_hdf5(tmp_path / "d.hdf5", a)))
    assert [len(e) for e in ds.episodes] == [4, 3, 3]
    # terminal -> terminated; timeout -> truncated; the trailing partial episode -> truncated
    assert [(e.terminated, e.truncated) for e in ds.episodes] == [(True, False), (False, True), (False, True)]
    np.testing.assert_array_equal(np.concatenate([e.rewards for e in ds.episodes]), a["rewards"])
    np.testing.assert_array_equal(np.concatenate([e.observations for e in ds.episodes]), a["observations"])
    for e, last in zip(ds.episodes, [3, 6, 9]):  # s_{T+1} is next_observations at each episode's last row
        np.testing.assert_array_equal(e.final_observation, a["next_observations"][last])


def test_hdf5_without_next_observations_and_float64(tmp_path):
    a = _flat()
    a.pop("next_observations")
    a["observations"] = a["observations"].astype(np.float64)
    ds = load_dataset(str(_write_hdf5(tmp_path / "d.h5", a, infos=False)))
    assert ds.episodes[0].observations.dtype == np.float32 and ds.episodes[0].final_observation is None
    np.testing.assert_allclose(ds.episodes[1].observations, a["observations"][4:7], rtol=1e-6)


def test_npz_round_trip(tmp_path):
    eps = [make_episode(5, seed=1), make_episode(3, seed=2)]
    eps[0].terminated, eps[0].truncated = True, False
    for i, e in enumerate(eps):
        e.final_observation = np.full(3, i, np.float32)
    path = tmp_path / "d.npz"
    save_npz(TrajectoryDataset(eps, env_id="Hopper-v5", metadata={"note": "x"}), path)
    ds = load_dataset(str(path))
    assert ds.env_id == "Hopper-v5" and ds.metadata["note"] == "x" and [len(e) for e in ds.episodes] == [5, 3]
    assert [(e.terminated, e.truncated) for e in ds.episodes] == [(True, False), (False, True)]
    for a, b in zip(eps, ds.episodes):
        for k in ("observations", "actions", "rewards", "final_observation"):
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k))


def test_npz_with_d4rl_next_observations(tmp_path):
    a = _flat()
    np.savez(tmp_path / "d.npz", **a)
    ds = load_dataset(str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(ds.episodes[1].final_observation, a["next_observations"][6])


def test_minari_dataset_from_the_local_store(tmp_path):
    raw = _hopper_episodes()
    _write_minari("test/hopper/tiny-v0", raw, ref_min_score=-1.0, ref_max_score=9.0)
    ds = load_dataset("test/hopper/tiny-v0")
    assert ds.env_id == "Hopper-v5" and len(ds.episodes) == 3 and (ds.obs_dim, ds.act_dim) == (11, 3)
    assert (ds.metadata["ref_min_score"], ds.metadata["ref_max_score"]) == (-1.0, 9.0)
    for e, (o, a, r, term) in zip(ds.episodes, raw):
        np.testing.assert_allclose(e.observations, o[:-1], rtol=1e-6)
        np.testing.assert_allclose(e.final_observation, o[-1], rtol=1e-6)
        np.testing.assert_allclose(e.actions, a, rtol=1e-6)
        np.testing.assert_allclose(e.rewards, r, rtol=1e-6)
        assert (e.terminated, e.truncated) == (term, not term)
    # The first load flattened the store into odt's cache; the second reads that, with the same result.
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 1
    again = load_dataset("test/hopper/tiny-v0")
    assert again.metadata == ds.metadata and again.env_id == ds.env_id
    for a, b in zip(ds.episodes, again.episodes):
        np.testing.assert_array_equal(a.observations, b.observations)
        assert (a.terminated, a.truncated) == (b.terminated, b.truncated)


def test_embedded_medium_replay_is_shipped():
    from odt.data.embedded import EMBEDDED

    ds = load_dataset("odt/hopper-medium-replay")
    d = ds.describe()
    assert d["n_transitions"] == EMBEDDED["odt/hopper-medium-replay"]["transitions"] == 114_999
    assert d["env_id"] == "Hopper-v5" and d["n_episodes"] == 762
    assert ds.metadata["behaviour"]["train_steps"] == 115_000


def test_collection_is_deterministic():
    from odt.data.generate import collect

    quiet = dict(log=lambda line: None)
    a, b = collect("Hopper-v5", 300, 7, None, **quiet), collect("Hopper-v5", 300, 7, None, **quiet)
    c = collect("Hopper-v5", 300, 8, None, **quiet)
    assert a.n_transitions == 300 and [len(e) for e in a.episodes] == [len(e) for e in b.episodes]
    for x, y in zip(a.episodes, b.episodes):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
    assert not np.array_equal(a.episodes[0].actions, c.episodes[0].actions)


# --- inspection -----------------------------------------------------------------------

def _independent_figures(rewards, terminals, timeouts):
    ends = list(np.flatnonzero(terminals | timeouts) + 1)
    if not ends or ends[-1] != len(rewards):
        ends.append(len(rewards))
    bounds = list(zip([0] + ends[:-1], ends))
    returns = np.array([rewards[s:e].sum(dtype=np.float64) for s, e in bounds])
    lengths = np.array([e - s for s, e in bounds])
    return {"n_episodes": len(bounds), "n_transitions": len(rewards), "return_mean": returns.mean(),
            "return_std": returns.std(), "return_min": returns.min(), "return_max": returns.max(),
            "length_mean": lengths.mean(), "length_min": lengths.min(), "length_max": lengths.max()}


@pytest.mark.parametrize("fmt", ["npz", "hdf5", "minari"])
def test_inspect_figures_equal_independent_ones(fmt, tmp_path, capsys):
    raw = _hopper_episodes(n_episodes=4, max_steps=60, seed=3)
    rewards = np.concatenate([r for _, _, r, _ in raw]).astype(np.float32)
    ends = np.cumsum([len(r) for _, _, r, _ in raw]) - 1
    terminals, timeouts = np.zeros(len(rewards), bool), np.zeros(len(rewards), bool)
    for end, (_, _, _, term) in zip(ends, raw):
        (terminals if term else timeouts)[end] = True
    arrays = dict(observations=np.concatenate([o[:-1] for o, _, _, _ in raw]),
                  actions=np.concatenate([a for _, a, _, _ in raw]), rewards=rewards,
                  terminals=terminals, timeouts=timeouts)
    if fmt == "npz":
        source = tmp_path / "d.npz"
        np.savez(source, **arrays, metadata=np.array(json.dumps({"env_id": "Hopper-v5"})))
    elif fmt == "hdf5":
        source = _write_hdf5(tmp_path / "d.hdf5", arrays)
        with h5py.File(source, "a") as f:
            f.attrs["env_id"] = "Hopper-v5"
    else:
        source = "test/hopper/inspect-v0"
        _write_minari(source, raw)
    assert main(["data", "inspect", str(source), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["obs_dim"], d["act_dim"], d["env_id"]) == (11, 3, "Hopper-v5")
    for key, value in _independent_figures(rewards, terminals, timeouts).items():
        assert d[key] == pytest.approx(value, rel=1e-5), key
    assert main(["data", "inspect", str(source)]) == 0  # the text form names the same figures
    text = capsys.readouterr().out
    assert f"{d['n_episodes']} episodes, {d['n_transitions']} transitions" in text
    assert f"max {d['return_max']:.2f}" in text


def test_data_list_names_embedded_and_local_minari(capsys):
    _write_minari("test/hopper/listed-v0", _hopper_episodes(1, 5))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("odt/hopper-medium", "odt/hopper-medium-replay", "odt/hopper-random", "test/hopper/listed-v0"):
        assert name in out


# --- validation: every bad source is one line, exit 2, no traceback ------------------

def _npz(tmp_path, mutate):
    a = _flat()
    mutate(a)
    np.savez(tmp_path / "bad.npz", **a)
    return tmp_path / "bad.npz"


def _cut(path):
    path.write_bytes(path.read_bytes()[:200])
    return path


BAD_SOURCES = {
    "missing npz": (lambda p: p / "none.npz", "does not exist"),
    "missing hdf5": (lambda p: p / "none.hdf5", "does not exist"),
    "unknown file type": (lambda p: (p / "d.csv").write_text("a,b") and p / "d.csv", "unknown file type"),
    "truncated npz": (lambda p: _cut(_npz(p, lambda a: None)), "truncated or not an .npz"),
    "truncated hdf5": (lambda p: _cut(_write_hdf5(p / "d.hdf5", _flat())), "truncated or not an HDF5"),
    "not hdf5": (lambda p: (p / "d.hdf5").write_text("hello") and p / "d.hdf5", "not an HDF5"),
    "missing key": (lambda p: _npz(p, lambda a: a.pop("timeouts")), "lacks the key(s) timeouts"),
    "lengths": (lambda p: _npz(p, lambda a: a.update(rewards=a["rewards"][:-1])), "rows but 'rewards' has 9"),
    "next_obs length": (lambda p: _npz(p, lambda a: a.update(next_observations=a["next_observations"][:4])),
                        "'next_observations' has 4 rows"),
    "nan": (lambda p: _npz(p, lambda a: a["observations"].__setitem__((2, 1), np.nan)), "'observations' holds NaN"),
    "inf": (lambda p: _npz(p, lambda a: a["rewards"].__setitem__(5, np.inf)), "'rewards' holds NaN or infinite"),
    "nan action": (lambda p: _npz(p, lambda a: a["actions"].__setitem__((0, 0), np.nan)), "'actions' holds NaN"),
    "empty": (lambda p: _npz(p, lambda a: a.update({k: v[:0] for k, v in a.items()})), "is empty"),
    "unknown minari id": (lambda p: "nobody/nothing-v0", "not in the local store"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_sources_are_named_in_one_line(case, tmp_path, capsys):
    make, needle = BAD_SOURCES[case]
    source = make(tmp_path)
    with pytest.raises(ConfigError, match=".*" + needle.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(str(source))
    assert main(["data", "inspect", str(source)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_minari_id_lists_the_local_ones():
    _write_minari("test/hopper/present-v0", _hopper_episodes(1, 5))
    with pytest.raises(ConfigError, match="local: test/hopper/present-v0; pass --download"):
        load_dataset("test/hopper/absent-v0")


@pytest.mark.parametrize("mutate,needle", [
    (lambda e: None, None),  # uniform in [-1, 1]: fine
    (lambda e: e.actions.__setitem__((2, 1), 1.0005), None),  # float round-off at the bound: tolerated
    (lambda e: e.actions.__setitem__((2, 1), 1.5), "outside Hopper-v5's bounds"),
    (lambda e: setattr(e, "actions", e.actions[:, :2]), "action dimension 2 but Hopper-v5 has 3"),
    (lambda e: setattr(e, "observations", e.observations[:, :5]), "observation dimension 5 but Hopper-v5 has 11"),
])
def test_dataset_must_fit_the_environment(mutate, needle):
    ep = make_episode(5, obs_dim=11, act_dim=3, seed=1)
    mutate(ep)
    env = gym.make("Hopper-v5")
    if needle is None:
        check_matches_env(TrajectoryDataset([ep], name="ok"), env)
    else:
        with pytest.raises(ConfigError, match=needle):
            check_matches_env(TrajectoryDataset([ep], name="bad"), env)


def test_mismatching_dataset_stops_a_run_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "cheetah-sized.npz"
    save_npz(TrajectoryDataset([make_episode(20, obs_dim=17, act_dim=6)], env_id="HalfCheetah-v5"), path)
    out = tmp_path / "run"
    assert main(["pretrain", "--dataset", str(path), "--env", "Hopper-v5", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "observation dimension 17 but Hopper-v5 has 11" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# --- the embedded medium datasets -------------------------------------------------------

MEDIUM = ["odt/hopper-medium", "odt/walker2d-medium", "odt/halfcheetah-medium"]


@pytest.mark.parametrize("name", MEDIUM)
def test_medium_data_regenerates_the_same_arrays_at_a_third_of_expert(name):
    """Recorded twice from the shipped policy, the first 20k steps are the same arrays; their
    episodes score in a band around D4RL's 'medium', a third of the expert return (D4RL's own
    medium-v2 data reads 44, 62 and 41 normalized)."""
    from odt.data.embedded import ASSETS, EMBEDDED
    from odt.data.generate import BehaviourPolicy, collect
    from odt.scores import REFERENCE_RETURNS, normalized_score, task_of

    entry = EMBEDDED[name]
    policy = BehaviourPolicy.load(ASSETS / entry["policy"])
    quiet = dict(log=lambda line: None, n_envs=10)
    a = collect(entry["env_id"], 20_000, entry["seed"], policy, **quiet)
    b = collect(entry["env_id"], 20_000, entry["seed"], policy, **quiet)
    assert [len(e) for e in a.episodes] == [len(e) for e in b.episodes]
    for x, y in zip(a.episodes, b.episodes):
        for key in ("observations", "actions", "rewards"):
            np.testing.assert_array_equal(getattr(x, key), getattr(y, key))
    whole = [e.ret for e in a.episodes if not e.truncated or len(e) == 1000]  # not the budget's cut ones
    assert len(whole) >= 10
    score = normalized_score(entry["env_id"], np.array(whole)).mean()
    assert 100 / 3 - 15 <= score <= 100 / 3 + 20, score
    # It was trained to D4RL's medium target: a third of the expert reference return.
    assert policy.meta["target_return"] == pytest.approx(REFERENCE_RETURNS[task_of(entry["env_id"])][1] / 3, rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", MEDIUM[1:])
def test_medium_data_is_the_documented_dataset(name):
    """The whole dataset, as a user's first run makes it: 200k steps, the behaviour's command in
    its metadata."""
    from odt.data.embedded import EMBEDDED

    ds = load_dataset(name)
    assert ds.n_transitions == 200_000 and ds.env_id == EMBEDDED[name]["env_id"]
    assert ds.metadata["behaviour_command"].startswith("odt data generate --env ")
    assert ds.metadata["behaviour"]["train_steps"] > 0
