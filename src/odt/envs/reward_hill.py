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

from ..data.trajectories import Episode, TrajectoryDataset


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


def reward_hill_dataset(seed: int = 0, n_left: int = 100, n_right: int = 28,
                        left: tuple[float, float] = (-1.0, -0.95)) -> TrajectoryDataset:
    """The toy's offline data; ``left=(-1, 0)``, ``n_right=0`` spreads the actions over the whole
    rising side, where the action that earns a return g is sqrt(g) - 1 (the return-following test)."""
    rng = np.random.default_rng(seed)
    actions = np.concatenate([rng.uniform(*left, n_left), rng.uniform(0.5, 1.0, n_right)]).astype(np.float32)
    zero = np.zeros((1, 1), np.float32)
    episodes = [Episode(zero, np.array([[a]], np.float32), np.array([hill_reward(a)], np.float32),
                        terminated=True, final_observation=zero[0]) for a in actions]
    return TrajectoryDataset(episodes, env_id="odt/RewardHill-v0", name="odt/reward-hill",
                             metadata={"env_id": "odt/RewardHill-v0", "seed": seed,
                                       "description": f"{n_left} actions in [{left[0]:g}, {left[1]:g}], {n_right} in [0.5, 1]"})
