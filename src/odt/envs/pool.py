"""The vector environments of a run, made once per size and reused: exploration rounds and
evaluations step the same ones (with --capture-video, evaluations step their own, whose first
environment renders)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from .video import recording_vector_env
from .make import make_vector_env
from .multitask import Task, make_task_envs


class EnvPool:
    def __init__(self, env_id: str, tasks: list[Task], obs_dim: int, act_dim: int):
        self.env_id, self.tasks, self.obs_dim, self.act_dim = env_id, tasks, obs_dim, act_dim
        self._envs: dict[tuple[int, int], gym.vector.VectorEnv] = {}

    def get(self, n: int, recorded: int = 0) -> gym.vector.VectorEnv:
        """n environments; multi-task: n of every task (environment i runs task i % tasks). With
        ``recorded``, a separate set whose first environments are EpisodeRecorders (single-task)."""
        key = (n, recorded)
        if key not in self._envs:
            if recorded:
                self._envs[key] = recording_vector_env(self.env_id, n, recorded)
            else:
                self._envs[key] = (make_task_envs(self.tasks, n, self.obs_dim, self.act_dim) if self.tasks
                                   else make_vector_env(self.env_id, n))
        return self._envs[key]

    def per_env(self, name: str, n: int) -> np.ndarray:
        """A task setting (g_eval, g_online) for each of n environments of every task."""
        return np.array([getattr(self.tasks[i % len(self.tasks)], name) for i in range(n * len(self.tasks))])

    def close(self) -> None:
        for envs in self._envs.values():
            envs.close()
