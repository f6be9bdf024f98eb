"""D4RL normalized scores: 100 * (return - random) / (expert - random).

The reference returns are D4RL's (``d4rl/infos.py``), measured on the v2 (mujoco-py) tasks.
Gymnasium's v5 tasks (and Gymnasium-Robotics' Adroit and PointMaze) have the same dynamics,
observations and rewards up to simulator version, so the scores are an approximation there, the
one the field uses. A dataset's own ``ref_min_score`` / ``ref_max_score`` (Minari's names) or the
run's ``--ref-min-score`` / ``--ref-max-score`` take precedence over this table.
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
    "pen": (96.262799, 3076.8331017826877),
    "hammer": (-274.856578, 12794.134825156867),
    "door": (-56.512833, 2880.5693087298737),
    "relocate": (-6.425911, 4233.877797728884),
    "maze2d-open": (0.01, 20.66),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
    "maze2d-open-dense": (11.17817, 27.166538620695782),
    "maze2d-umaze-dense": (68.537689, 193.66285642381482),
    "maze2d-medium-dense": (44.264742, 297.4552547777125),
    "maze2d-large-dense": (30.569041, 303.4857382709002),
    # Not D4RL's: uniform random actions over 1000 episodes (seeds 0-999), and the episode cap.
    "cartpole": (22.197, 500.0),
}
# Environment ids of Gymnasium (-Robotics) without the version, lower case, '_' and '-' removed.
_ENV_TO_TASK = {"hopper": "hopper", "walker2d": "walker2d", "halfcheetah": "halfcheetah", "ant": "ant",
                "adroithandpen": "pen", "adroithandhammer": "hammer", "adroithanddoor": "door",
                "adroithandrelocate": "relocate", "cartpole": "cartpole"}
for _size in ("open", "umaze", "medium", "large"):
    _ENV_TO_TASK[f"pointmaze{_size}"] = f"maze2d-{_size}"
    _ENV_TO_TASK[f"pointmaze{_size}dense"] = f"maze2d-{_size}-dense"
    for _dense in ("", "dense"):
        for _div in ("", "diverse", "diversegr", "diverseg"):
            _ENV_TO_TASK[f"antmaze{_size}{_div}{_dense}"] = "antmaze"


def task_of(env_id: str | None) -> str | None:
    """'Hopper-v5' -> 'hopper', 'PointMaze_UMaze-v3' -> 'maze2d-umaze', 'hopper-medium-v2' ->
    'hopper'; None when no reference exists."""
    if not env_id:
        return None
    if env_id in REFERENCE_RETURNS:
        return env_id
    base = re.sub(r"-v\d+$", "", env_id)
    key = re.sub(r"[^a-z0-9]", "", base.lower())
    if key in _ENV_TO_TASK:
        return _ENV_TO_TASK[key]
    head = base.lower().split("-")[0]  # D4RL dataset names: hopper-medium-replay-v2, antmaze-umaze-v2
    return head if head in REFERENCE_RETURNS else None


def normalized_score(task: str, returns, reference: tuple[float, float] | None = None):
    """Normalised score(s) of ``returns`` for a task name or environment id; ``reference``
    (random, expert) overrides the table."""
    key = task_of(task)
    ref = reference or REFERENCE_RETURNS.get(key or "")
    if ref is None:
        raise KeyError(f"no reference returns for {task!r}; known: {', '.join(REFERENCE_RETURNS)}")
    lo, hi = ref
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


def reference_of(env_id: str | None, override: tuple[float | None, float | None] = (None, None),
                 metadata: dict | None = None) -> tuple[float, float] | None:
    """The (random, expert) pair a run scores against: its flags, else the dataset's own
    ``ref_min_score``/``ref_max_score``, else D4RL's table."""
    if override[0] is not None and override[1] is not None:
        return float(override[0]), float(override[1])
    meta = metadata or {}
    if meta.get("ref_min_score") is not None and meta.get("ref_max_score") is not None:
        return float(meta["ref_min_score"]), float(meta["ref_max_score"])
    task = task_of(env_id)
    return REFERENCE_RETURNS[task] if task else None


def return_stats(env_id: str | None, returns, reference: tuple[float, float] | None = None) -> dict:
    """Mean and std of episode returns, and of their normalized scores where a reference exists."""
    returns = np.asarray(returns, dtype=np.float64)
    out = {"return_mean": float(returns.mean()), "return_std": float(returns.std())}
    ref = reference or reference_of(env_id)
    if ref is not None:
        norm = normalized_score(env_id or "", returns, ref)
        out.update(normalized_mean=float(norm.mean()), normalized_std=float(norm.std()))
    return out
