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


def probe(run_dir, targets, checkpoint: str = "final") -> np.ndarray:
    """The policy's mean action at each target return (the one observation there is)."""
    from ..checkpoint import load_policy

    policy = load_policy(run_dir, checkpoint)
    targets = np.asarray(targets, np.float32)
    policy.reset(targets, n=len(targets))
    return policy.act(np.zeros((len(targets), 1), np.float32))[:, 0]


def plot(results: list[dict], targets: np.ndarray, path) -> None:
    """Each run's action against the target return, over the hill and the offline data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = reward_hill_dataset()
    fig, (hill, act) = plt.subplots(1, 2, figsize=(10, 4))
    a = np.linspace(-1, 1, 201)
    hill.plot(a, hill_reward(a), color="black", label="reward")
    offline = np.array([e.actions[0, 0] for e in data.episodes])
    hill.scatter(offline, hill_reward(offline), s=8, color="grey", label="offline data")
    colors = {"odt": "tab:blue", "vidt": "tab:red", "dt": "tab:green", "odt-td3": "tab:purple"}
    for r in results:
        hill.scatter([r["action"]], [r["reward"]], color=colors.get(r["algo"]), marker="x")
        act.plot(targets, r["actions_by_target"], color=colors.get(r["algo"]), alpha=0.7,
                 label=f"{r['algo']} seed {r['seed']}")
    hill.set(xlabel="action", ylabel="reward", title="final actions at target return 1")
    act.scatter(hill_reward(offline), offline, s=8, color="grey", label="offline data")
    act.axhline(0.0, color="black", lw=0.5, ls="--")
    act.set(xlabel="target return", ylabel="mean action", title="action against target return")
    hill.legend(fontsize=7)
    act.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
