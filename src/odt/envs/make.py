"""Environments for training, evaluation and `odt eval`: checked construction, the horizon check,
vector environments, and the one place where actions cross between the environment's units and
the [-1, 1] box the policy acts in."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from ..config import ConfigError


def make_env_checked(env_id: str) -> gym.Env:
    try:
        return gym.make(env_id)
    except gym.error.Error as e:
        raise ConfigError(f"unknown environment {env_id!r} ({str(e).splitlines()[0]}); "
                          "give a Gymnasium id such as Hopper-v5") from e


def make_env_with_horizon(env_id: str, max_ep_len: int) -> gym.Env:
    """The environment, refused when its episodes can outlast the timestep embedding."""
    env = make_env_checked(env_id)
    horizon = env.spec.max_episode_steps if env.spec else None
    if horizon and horizon > max_ep_len:
        env.close()
        raise ConfigError(f"{env_id} episodes last up to {horizon} steps but --max-ep-len is {max_ep_len}; "
                          f"pass --max-ep-len {horizon}")
    return env


def make_vector_env(env_id: str, n: int) -> gym.vector.VectorEnv:
    # Synchronous: MuJoCo steps take microseconds, the policy's forward pass dominates, and
    # subprocesses would compete with torch for the cores.
    return gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(n)])


def scale_actions_to_unit(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map environment actions into [-1, 1], the box the policy acts in."""
    return (2.0 * (actions - low) / (high - low) - 1.0).astype(np.float32)


def scale_actions_from_unit(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The inverse of ``scale_actions_to_unit``: [-1, 1] back to the environment's bounds."""
    return low + (actions + 1.0) * 0.5 * (high - low)
