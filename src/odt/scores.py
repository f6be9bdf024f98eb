"""D4RL normalised scores: 100 * (return - random) / (expert - random).

The reference returns are D4RL's (``d4rl/infos.py``), measured on the v2 (mujoco-py) tasks.
Gymnasium's v5 tasks have the same dynamics, observations and rewards up to simulator version,
so the scores are an approximation there, the one the field uses.
"""
from __future__ import annotations

import re

import numpy as np

# (random return, expert return)
REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "halfcheetah": (-280.178953, 12135.0),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
}
_ENV_TO_TASK = {"hopper": "hopper", "walker2d": "walker2d", "halfcheetah": "halfcheetah", "ant": "ant",
                "antmaze": "antmaze"}


def task_of(env_id: str | None) -> str | None:
    """'Hopper-v5' -> 'hopper', 'AntMaze_UMaze-v5' -> 'antmaze'; None when no reference exists."""
    if not env_id:
        return None
    key = re.sub(r"[^a-z0-9]", "", env_id.split("-v")[0].split("_")[0].lower())
    return _ENV_TO_TASK.get(key)


def normalized_score(task: str, returns, reference: tuple[float, float] | None = None):
    """Normalised score(s) of ``returns`` for a task name or environment id."""
    key = task if task in REFERENCE_RETURNS else task_of(task)
    ref = reference or REFERENCE_RETURNS.get(key or "")
    if ref is None:
        raise KeyError(f"no reference returns for {task!r}; known: {', '.join(REFERENCE_RETURNS)}")
    lo, hi = ref
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


def return_stats(env_id: str | None, returns) -> dict:
    """Mean and std of episode returns, and of their normalised scores where a reference exists."""
    returns = np.asarray(returns, dtype=np.float64)
    out = {"return_mean": float(returns.mean()), "return_std": float(returns.std())}
    if task_of(env_id):
        norm = normalized_score(env_id, returns)
        out.update(normalized_mean=float(norm.mean()), normalized_std=float(norm.std()))
    return out
