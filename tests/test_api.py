"""odt.train: the loop of `odt run`, from Python, on an environment registered nowhere and
episodes held in memory."""
import json

import gymnasium as gym
import numpy as np
import pytest

import odt
from odt.config import ConfigError


class Reach(gym.Env):
    """A point on a line that should reach x = 0.5; its actions live in [-2, 2], so that the run's
    rescaling to the policy's [-1, 1] box is exercised."""

    observation_space = gym.spaces.Box(-5, 5, (2,), np.float32)
    action_space = gym.spaces.Box(-2, 2, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1, 1))
        return self._obs(), {}

    def _obs(self):
        return np.array([self.x, 0.5 - self.x], np.float32)

    def step(self, action):
        self.x = float(np.clip(self.x + 0.1 * float(action[0]), -5, 5))
        return self._obs(), -abs(self.x - 0.5), False, False, {}


def make_reach():
    return gym.wrappers.TimeLimit(Reach(), max_episode_steps=20)


def episodes(n=30, seed=0):
    """Minari's layout: T + 1 observations (the last one final), no termination."""
    env, rng, out = make_reach(), np.random.default_rng(seed), []
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        ep = {"observations": [obs], "actions": [], "rewards": []}
        for _ in range(20):
            a = rng.uniform(-2, 2, 1).astype(np.float32)
            obs, r, *_ = env.step(a)
            ep["observations"].append(obs), ep["actions"].append(a), ep["rewards"].append(r)
        out.append({k: np.array(v) for k, v in ep.items()} | {"terminations": np.zeros(20, bool)})
    return out


SMALL = dict(embed_dim=16, n_layer=1, n_head=1, context_len=5, eval_context=5, max_ep_len=20, batch_size=16,
             pretrain_updates=10, online_steps=80, episodes_per_round=2, updates_per_round=2, eval_every=1,
             eval_episodes=2, buffer_size=30, rtg_scale=10.0, g_online=0.0, g_eval=0.0, warmup_steps=5,
             threads=1, progress=False)


def test_train_runs_the_loop_on_an_unregistered_env_and_in_memory_episodes(tmp_path):
    data = episodes()
    result = odt.train({"preset": "reward-hill"}, env=make_reach, dataset=data, out=tmp_path / "run", **SMALL)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["env"] == "odt-python/Reach-v0" and cfg["dataset"] == "in-memory: 30 episodes from Python"
    assert cfg["embed_dim"] == 16 and cfg["algo"] == "odt"  # the settings given, over the preset's
    assert result.run_dir == tmp_path / "run" and (result.run_dir / "summary.json").is_file()
    assert result.summary == json.loads((result.run_dir / "summary.json").read_text())
    assert result.summary["online_steps"] >= 80
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "round" for r in rows)
    # The policy handed back acts in the environment's own units, as a loaded one does.
    env = make_reach()
    obs, _ = env.reset(seed=0)
    result.policy.reset(target_return=0.0)
    loaded = odt.Policy.load(result.run_dir)
    loaded.reset(target_return=0.0)
    a, b = result.policy.act(obs), loaded.act(obs)
    assert a.shape == (1,) and -2 <= a[0] <= 2 and np.allclose(a, b)
    assert data[0]["actions"].max() > 1  # the caller's episodes were not rescaled in place


def test_train_takes_a_trajectory_dataset_and_a_config(tmp_path):
    from odt.api import as_dataset
    dataset = as_dataset(episodes(10), "unused")
    before = dataset.episodes[0].actions.copy()
    cfg = odt.preset("reward-hill")
    result = odt.train(cfg, env=make_reach, dataset=dataset, finetune=False, out=tmp_path / "pre", **SMALL)
    assert "offline" in result.summary and result.summary["online_steps"] == 0
    np.testing.assert_array_equal(dataset.episodes[0].actions, before)


@pytest.mark.parametrize("episode,message", [
    ({"observations": np.zeros((3, 2)), "actions": np.zeros((3, 1))}, "lacks rewards"),
    ({"observations": np.zeros((5, 2)), "actions": np.zeros((3, 1)), "rewards": np.zeros(3)}, "5 observations"),
])
def test_bad_episodes_are_refused_in_one_line(episode, message, tmp_path):
    with pytest.raises(ConfigError, match=message) as e:
        odt.train("reward-hill", env=make_reach, dataset=[episode], out=tmp_path / "bad", **SMALL)
    assert "\n" not in str(e.value) and not (tmp_path / "bad").exists()


def _spoil(key, value, at=(2, 0)):
    """Episodes 0-3 of the Reach data with one entry of episode 2's ``key`` set to ``value``."""
    data = episodes(4)
    arr = data[at[0]][key].astype(np.float64)
    arr[(at[1],) + (0,) * (arr.ndim - 1)] = value
    data[at[0]][key] = arr
    return data


@pytest.mark.parametrize("key", ["observations", "actions", "rewards"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values_in_memory_are_refused_before_a_run_directory_exists(key, value, tmp_path):
    with pytest.raises(ConfigError) as e:
        odt.train("reward-hill", env=make_reach, dataset=_spoil(key, value, at=(2, 3)), out=tmp_path / "bad", **SMALL)
    msg = str(e.value)
    assert "episode 2" in msg and f"'{key}'" in msg and "NaN or infinite" in msg and "step 3" in msg
    assert "\n" not in msg and not (tmp_path / "bad").exists()


def test_a_non_finite_final_observation_is_refused(tmp_path):
    data = episodes(4)
    data[1]["observations"][-1, 0] = np.nan  # Minari's T + 1st row: the episode's final observation
    with pytest.raises(ConfigError, match="episode 1: 'final_observation' holds NaN"):
        odt.train("reward-hill", env=make_reach, dataset=data, out=tmp_path / "bad", **SMALL)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("key,width,message", [
    ("observations", 3, "episode 2: 'observations' is 3 wide but the environment's is 2"),
    ("actions", 2, "episode 2: 'actions' is 2 wide but the environment's is 1"),
])
def test_widths_that_are_not_the_environments_are_refused(key, width, message, tmp_path):
    data = episodes(4)
    rows = len(data[2][key])
    data[2][key] = np.zeros((rows, width), np.float32)
    with pytest.raises(ConfigError, match=message):
        odt.train("reward-hill", env=make_reach, dataset=data, out=tmp_path / "bad", **SMALL)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("key,rows,message", [
    ("observations", 19, "episode 1: 'observations' has shape \\(19, 2\\) but the episode has 20 rewards"),
    ("actions", 21, "episode 1: 'actions' has shape \\(21, 1\\) but the episode has 20 rewards"),
])
def test_a_hand_built_dataset_is_checked_like_a_file(key, rows, message, tmp_path):
    """A TrajectoryDataset built by hand skips the dict parser: its episodes get the same checks."""
    from odt.api import as_dataset
    dataset = as_dataset(episodes(3), "unused")
    e = dataset.episodes[1]
    setattr(e, key, np.zeros((rows, getattr(e, key).shape[1]), np.float32))
    with pytest.raises(ConfigError, match=message):
        odt.train("reward-hill", env=make_reach, dataset=dataset, out=tmp_path / "bad", **SMALL)
    assert not (tmp_path / "bad").exists()
    dataset.episodes[0].rewards[4] = np.nan
    with pytest.raises(ConfigError, match="episode 0: 'rewards' holds NaN or infinite values \\(first at step 4\\)"):
        odt.train("reward-hill", env=make_reach, dataset=dataset, out=tmp_path / "bad", **SMALL)
    assert not (tmp_path / "bad").exists()


def test_register_env_keeps_the_envs_own_time_limit():
    from odt.api import register_env
    env_id = register_env(make_reach, max_ep_len=1000)
    assert env_id == "odt-python/Reach-v0" and gym.spec(env_id).max_episode_steps == 20
    assert register_env(lambda: Reach(), max_ep_len=50) == env_id and gym.spec(env_id).max_episode_steps == 50


def test_nothing_to_run_and_finetuning_without_init_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="nothing to run"):
        odt.train("reward-hill", env=make_reach, pretrain=False, finetune=False, out=tmp_path / "a")
    with pytest.raises(ConfigError, match="needs init="):
        odt.train("reward-hill", env=make_reach, pretrain=False, out=tmp_path / "b")
    assert not any(tmp_path.iterdir())


def test_finetuning_from_python_starts_from_the_pretrained_run(tmp_path):
    pre = odt.train("reward-hill", env=make_reach, dataset=episodes(10), finetune=False, out=tmp_path / "pre", **SMALL)
    fine = odt.train("reward-hill", env=make_reach, dataset=episodes(10), pretrain=False, init=pre.run_dir,
                     out=tmp_path / "fine", **SMALL)
    assert fine.summary["offline"] == pre.summary["offline"]  # the same weights, evaluated on the same seeds
    assert fine.summary["online_steps"] >= 80


def test_unknown_settings_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting.*learning_rate"):
        odt.train("reward-hill", env=make_reach, dataset=episodes(2), learning_rate=1.0, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _taxi():
    return gym.make("Taxi-v4")


# Each: odt.train's arguments (beside the preset and SMALL) and the words of the ValueError.
BAD_CALLS = {
    "dataset a number": (dict(env=make_reach, dataset=42), "dataset must be a source name or path"),
    "dataset one episode": (dict(env=make_reach, dataset=episodes(1)[0]), "dataset is one episode (a dict of arrays)"),
    "episode not a dict": (dict(env=make_reach, dataset=[np.zeros(3)]), "episode 0 is a ndarray, not a dict"),
    "actions None": (dict(env=make_reach, dataset=[{**episodes(1)[0], "actions": None}]),
                     "episode 0: 'actions' must be an array of numbers"),
    "rewards ragged": (dict(env=make_reach, dataset=[{**episodes(1)[0], "rewards": [[1.0], [1.0, 2.0]]}]),
                       "episode 0: 'rewards' must be an array of numbers"),
    "env a number": (dict(env=42, dataset=episodes(2)), "env must be a Gymnasium id or a function"),
    "env factory of no env": (dict(env=lambda: 42, dataset=episodes(2)), "made a int, not a gymnasium.Env"),
    "discrete observations": (dict(env=_taxi, dataset=episodes(2)), "odt needs flat Box observations"),
    "negative seed": (dict(env=make_reach, dataset=episodes(2), seed=-1), "--seed must be >= 0, got -1"),
    "lr NaN": (dict(env=make_reach, dataset=episodes(2), lr=float("nan")), "--lr must be a finite number"),
    "budget a string": (dict(env=make_reach, dataset=episodes(2), online_steps="100"),
                        'online_steps must be an integer, got "100"'),
    "flag a bool for a number": (dict(env=make_reach, dataset=episodes(2), batch_size=True),
                                 "batch_size must be an integer, got true"),
    "two presets": (dict(env=make_reach, dataset=episodes(2), preset="cpu-small"), "both name the defaults"),
    "config a number": (dict(config=3, env=make_reach, dataset=episodes(2)), "config must be a Config"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_calls_raise_a_value_error_before_anything_is_written(case, tmp_path, monkeypatch):
    monkeypatch.setenv("ODT_CACHE", str(tmp_path / "cache"))
    kwargs, needle = BAD_CALLS[case]
    config = kwargs.pop("config", "reward-hill")
    with pytest.raises(ValueError) as e:
        odt.train(config, out=tmp_path / "run", **{**SMALL, **kwargs})
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert isinstance(e.value, ConfigError)
    assert not any(tmp_path.iterdir())  # no run directory, nothing in the cache


def test_a_preset_given_as_a_setting_names_the_defaults_and_is_recorded():
    from odt.api import _config
    from odt.config import preset

    assert _config(None, {"preset": "cpu-small"}).to_dict() == {**preset("cpu-small").to_dict(), "preset": "cpu-small"}
    assert _config({"lr": 0.5}, {"preset": "cpu-small"}).lr == 0.5
    assert _config("cpu-small", {}).preset == "cpu-small"  # config.json says which preset the run used
