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
from .make import make_env, scale_actions_from_unit


def pad(x: np.ndarray, dim: int) -> np.ndarray:
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
        return pad((obs - self.obs_mean) / self.obs_std, obs_dim)

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


def make_task_envs(tasks: list[Task], per_task: int, obs_dim: int, act_dim: int) -> gym.vector.VectorEnv:
    """``per_task`` environments of every task; environment i runs task i % len(tasks)."""
    fns = [lambda t=tasks[i % len(tasks)]: PaddedTask(make_env(t.env_id), t, obs_dim, act_dim)
           for i in range(per_task * len(tasks))]
    return gym.vector.SyncVectorEnv(fns)
