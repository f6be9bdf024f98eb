"""The reward hill of the ViDT project page: a one-step task whose offline data sit on the two
feet of a hill, so that a return-conditioned policy asked for the peak's return must extrapolate.

Action a in [-1, 1]; reward (a + 1)^2 for a < 0 and 1 - 2a for a >= 0: the peak is 1 at a = 0.
Offline data: 100 actions uniform in [-1, -0.95] (rewards 0 to 0.0025) and 28 uniform in
[0.5, 1] (rewards -1 to 0). ODT conditioned on return 1 has nothing to imitate; a TD3 critic
knows which way the reward rises.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np


def hill_reward(a):
    a = np.asarray(a, dtype=np.float64)
    return np.where(a < 0, (a + 1.0) ** 2, 1.0 - 2.0 * a)


class RewardHillEnv(gym.Env):
    """One step: a constant observation, one action, its reward, terminated."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        a = float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0))
        return np.zeros(1, np.float32), float(hill_reward(a)), True, False, {}
