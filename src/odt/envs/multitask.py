"""Multi-task finetuning (tutorial section 7.9): one model over several environments whose
observation and action spaces are padded to a common size.

Each task's observations are normalised with its own dataset's statistics and then zero-padded;
its actions live in the first dimensions of a common [-1, 1] box (the padding is ignored by the
environment, and the datasets carry zeros there, so the model learns to predict zeros). The
model sees no task id: the tasks differ in their padded observations."""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from ..config import ConfigError
from ..data.trajectories import Episode, TrajectoryDataset


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
        self.task = task
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
        self._own_act = env.action_space.shape[0]

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        out = np.zeros(self.observation_space.shape, np.float32)
        out[:len(obs)] = (obs - self.task.obs_mean) / self.task.obs_std
        return out

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._obs(obs), info

    def step(self, action):
        a = np.clip(np.asarray(action, np.float32)[:self._own_act], -1.0, 1.0)
        a = self.task.act_low + (a + 1.0) * 0.5 * (self.task.act_high - self.task.act_low)
        obs, reward, terminated, truncated, info = self.env.step(a)
        return self._obs(obs), reward, terminated, truncated, info


def load_tasks(specs: list[str], cfg, make_env) -> tuple[TrajectoryDataset, list[Task]]:
    """Every task's dataset, checked against its environment, normalised, padded and merged
    (``Episode.task`` says whose it is); targets default to the expert return (else the best in
    the data) for evaluation and twice that for exploration, the paper's ratio."""
    from ..data.sources import check_matches_env, load_dataset
    from ..rollout import scale_actions_to_unit
    from ..scores import reference_of

    loaded = []
    for spec in specs:
        env_id, source, g_eval, g_online = parse_task(spec)
        env = make_env(env_id)
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
            obs = np.zeros((len(e), obs_dim), np.float32)
            obs[:, :ds.obs_dim] = (e.observations - task.obs_mean) / task.obs_std
            act = np.zeros((len(e), act_dim), np.float32)
            act[:, :ds.act_dim] = scale_actions_to_unit(e.actions, task.act_low, task.act_high)
            final = None
            if e.final_observation is not None:
                final = np.zeros(obs_dim, np.float32)
                final[:ds.obs_dim] = (e.final_observation - task.obs_mean) / task.obs_std
            episodes.append(Episode(obs, act, e.rewards, e.terminated, e.truncated, final, task=i))
    name = " + ".join(task.dataset for task, _ in loaded)
    return TrajectoryDataset(episodes, env_id=None, name=name), [task for task, _ in loaded]


def make_task_envs(tasks: list[Task], per_task: int, obs_dim: int, act_dim: int) -> gym.vector.VectorEnv:
    """``per_task`` environments of every task; environment i runs task i % len(tasks)."""
    fns = [lambda t=tasks[i % len(tasks)]: PaddedTask(gym.make(t.env_id), t, obs_dim, act_dim)
           for i in range(per_task * len(tasks))]
    return gym.vector.SyncVectorEnv(fns)
