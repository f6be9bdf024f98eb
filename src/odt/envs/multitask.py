"""Multi-task finetuning (tutorial section 7.9): one model over several environments whose
observation and action spaces are padded to a common size.

Each task's observations are normalized with its own dataset's statistics and then zero-padded;
its actions live in the first dimensions of a common [-1, 1] box (the padding is ignored by the
environment, and the datasets carry zeros there, so the model learns to predict zeros). The
model sees no task id: the tasks differ in their padded observations."""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from ..config import ConfigError
from ..data.sources import check_matches_env, check_recorded_env, load_dataset
from ..data.trajectories import Episode, TrajectoryDataset
from ..scores import reference_of
from .make import make_env, scale_actions_from_unit, scale_actions_to_unit


def _pad(x: np.ndarray, dim: int) -> np.ndarray:
    """Zeros after the last axis's own entries, up to ``dim``."""
    out = np.zeros((*x.shape[:-1], dim), np.float32)
    out[..., :x.shape[-1]] = x
    return out


@dataclass
class Task:
    env_id: str
    dataset: str
    g_eval: float
    g_online: float
    reference: tuple[float, float] | None
    obs_mean: np.ndarray
    obs_std: np.ndarray
    act_low: np.ndarray
    act_high: np.ndarray

    def observation(self, obs: np.ndarray, obs_dim: int) -> np.ndarray:
        """Raw observations (one or many) as the model sees them: normalized, then padded."""
        return _pad((obs - self.obs_mean) / self.obs_std, obs_dim)

    @property
    def key(self) -> str:
        """The task's name in metrics.jsonl keys: 'Hopper-v5' -> 'hopper_v5'."""
        return self.env_id.replace("/", "_").replace("-", "_").lower()


def parse_task(spec: str) -> tuple[str, str, float | None, float | None]:
    """'ENV=DATASET' or 'ENV=DATASET:G_EVAL:G_ONLINE'."""
    env_id, sep, rest = spec.partition("=")
    parts = rest.split(":") if sep else []
    if not env_id or not parts or not parts[0] or len(parts) not in (1, 3):
        raise ConfigError(f"--tasks entry {spec!r} is not ENV=DATASET or ENV=DATASET:G_EVAL:G_ONLINE, "
                          "e.g. Hopper-v5=odt/hopper-medium")
    if len(parts) == 1:
        return env_id, parts[0], None, None
    try:
        return env_id, parts[0], float(parts[1]), float(parts[2])
    except ValueError:
        raise ConfigError(f"--tasks entry {spec!r}: G_EVAL and G_ONLINE must be numbers") from None


class PaddedTask(gym.Wrapper):
    """A task's environment seen through the common spaces."""

    def __init__(self, env: gym.Env, task: Task, obs_dim: int, act_dim: int):
        super().__init__(env)
        self.task, self._obs_dim = task, obs_dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self._own_act = env.action_space.shape[0]

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self.task.observation(obs, self._obs_dim), info

    def step(self, action):
        a = np.clip(np.asarray(action, np.float32)[:self._own_act], -1.0, 1.0)
        obs, reward, terminated, truncated, info = self.env.step(
            scale_actions_from_unit(a, self.task.act_low, self.task.act_high))
        return self.task.observation(obs, self._obs_dim), reward, terminated, truncated, info


def load_tasks(specs: list[str], cfg, make_env) -> tuple[TrajectoryDataset, list[Task]]:
    """Every task's dataset, checked against its environment, normalized, padded and merged
    (``Episode.task`` says whose it is); targets default to the expert return (else the best in
    the data) for evaluation and twice that for exploration, the paper's ratio."""
    loaded = []
    for spec in specs:
        env_id, source, g_eval, g_online = parse_task(spec)
        env = make_env(env_id)
        check_recorded_env(source, env_id, (env.observation_space.shape[0], env.action_space.shape[0]))
        ds = load_dataset(source, download=cfg.download)
        check_matches_env(ds, env)
        low, high = env.action_space.low.astype(np.float32), env.action_space.high.astype(np.float32)
        env.close()
        reference = reference_of(env_id, (None, None), ds.metadata)
        if g_eval is None:
            g_eval = reference[1] if reference is not None else float(ds.returns().max())
            g_online = 2.0 * g_eval
        mean, std = ds.obs_stats()
        loaded.append((Task(env_id, source, g_eval, g_online, reference, mean, std, low, high), ds))
    obs_dim = max(ds.obs_dim for _, ds in loaded)
    act_dim = max(ds.act_dim for _, ds in loaded)
    episodes = []
    for i, (task, ds) in enumerate(loaded):
        for e in ds.episodes:
            final = None if e.final_observation is None else task.observation(e.final_observation, obs_dim)
            episodes.append(Episode(task.observation(e.observations, obs_dim),
                                    _pad(scale_actions_to_unit(e.actions, task.act_low, task.act_high), act_dim),
                                    e.rewards, e.terminated, e.truncated, final, task=i))
    name = " + ".join(task.dataset for task, _ in loaded)
    return TrajectoryDataset(episodes, env_id=None, name=name), [task for task, _ in loaded]


def make_task_envs(tasks: list[Task], per_task: int, obs_dim: int, act_dim: int) -> gym.vector.VectorEnv:
    """``per_task`` environments of every task; environment i runs task i % len(tasks)."""
    fns = [lambda t=tasks[i % len(tasks)]: PaddedTask(make_env(t.env_id), t, obs_dim, act_dim)
           for i in range(per_task * len(tasks))]
    return gym.vector.SyncVectorEnv(fns)
