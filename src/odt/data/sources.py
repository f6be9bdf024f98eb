"""Loading offline data from the formats of the field into a ``TrajectoryDataset``."""
from __future__ import annotations

import contextlib
import difflib
import re
from pathlib import Path

import gymnasium as gym
import numpy as np

from ..config import ConfigError
from ..envs.make import action_width, check_spaces, make_env_checked, obs_width
from .embedded import EMBEDDED, load_embedded
from .formats import from_arrays, read_hdf5, read_npz, save_npz  # noqa: F401  (odt.data.sources.save_npz, the old path)
from .minari import load_minari
from .trajectories import TrajectoryDataset


def load_dataset(source: str, download: bool = False) -> TrajectoryDataset:
    """An embedded dataset name (``odt/hopper-medium``), a ``.npz`` or D4RL-format ``.hdf5`` file,
    or a Minari dataset id."""
    if source in EMBEDDED:
        ds = load_embedded(source)
    else:
        path = Path(source).expanduser()
        if path.suffix == ".npz":
            ds = from_arrays(read_npz(path), source)
        elif path.suffix in (".hdf5", ".h5"):
            ds = from_arrays(read_hdf5(path), source)
        elif path.exists():
            raise ConfigError(f"dataset {source}: unknown file type {path.suffix!r}; use .npz or .hdf5")
        elif source.startswith("odt/") and not re.search(r"-v\d+$", source):  # odt's names; Minari's end in -vN
            raise ConfigError(f"no embedded dataset {source!r}; {_did_you_mean(source)}`odt data list` lists them")
        elif "/" in source and not path.suffix:
            ds = load_minari(source, download)
        else:
            raise ConfigError(f"dataset {source!r} not found; {_did_you_mean(source)}give an existing .npz/.hdf5 "
                              f"file, a Minari id, or one of {', '.join(EMBEDDED)}")
    check_episodes(ds)
    return ds


def _did_you_mean(source: str) -> str:
    close = difflib.get_close_matches(source, EMBEDDED, n=1, cutoff=0.75)
    return f"did you mean {close[0]}? " if close else ""


def check_recorded_env(source: str, env_id: str, dims: tuple[int, int] | None = None) -> None:
    """An embedded dataset names the environment its recipe records in: one whose spaces differ
    from ``env_id``'s (observation and action dimensions ``dims``, where known) is refused here,
    before minutes of generation rather than after."""
    recorded = EMBEDDED.get(source, {}).get("env_id")
    if recorded is None or recorded == env_id:
        return
    theirs = _dims(recorded)
    ours = dims or _dims(env_id)
    if theirs != ours:
        fitting = [name for name, e in EMBEDDED.items() if e["env_id"] == env_id]
        alternative = f" ({', '.join(fitting)})" if fitting else ""
        raise ConfigError(f"dataset {source} is recorded in {recorded} (observation/action dimensions "
                          f"{theirs[0]}/{theirs[1]}), but {env_id} has {ours[0]}/{ours[1]}; give --env {recorded}, "
                          f"or a dataset recorded in {env_id}{alternative}")


def _dims(env_id: str) -> tuple[int, int]:
    with contextlib.closing(make_env_checked(env_id)) as env:
        check_spaces(env, env_id)
        return obs_width(env.observation_space), action_width(env.action_space)


def _check_indices(ds: TrajectoryDataset, env_id: str, n: int) -> None:
    """Discrete actions: one index per step, a whole number in [0, n); the first that is not is
    named by episode and step."""
    if ds.act_dim != 1:
        raise ConfigError(f"dataset {ds.name} has actions {ds.act_dim} wide, but {env_id}'s are discrete: one "
                          f"index in [0, {n}) per step; use a dataset recorded in {env_id} or change --env")
    for i, e in enumerate(ds.episodes):
        a = e.actions[:, 0]
        bad = np.flatnonzero((a != np.round(a)) | (a < 0) | (a >= n))
        if len(bad):
            t = int(bad[0])
            what = "is not a whole number" if a[t] != round(float(a[t])) else f"is outside [0, {n})"
            raise ConfigError(f"dataset {ds.name}, episode {i}, step {t}: action {a[t]:g} {what}, but {env_id} takes "
                              f"action indices 0 to {n - 1}; use a dataset recorded in {env_id} or change --env")


def check_episodes(ds: TrajectoryDataset, obs_dim: int | None = None, act_dim: int | None = None) -> None:
    """Every episode's arrays are finite, agree in length, and have one width (``obs_dim``/``act_dim``
    where the environment fixes it): a bad row named here, not a NaN loss or a shape error later."""
    if not ds.episodes or ds.n_transitions == 0:
        raise ConfigError(f"dataset {ds.name} is empty; it needs at least one transition")
    obs_dim = ds.episodes[0].observations.shape[-1] if obs_dim is None else obs_dim
    act_dim = ds.episodes[0].actions.shape[-1] if act_dim is None else act_dim
    for i, e in enumerate(ds.episodes):
        T = len(e.rewards)
        for key, arr, width in (("observations", e.observations, obs_dim), ("actions", e.actions, act_dim),
                                ("rewards", e.rewards, None), ("final_observation", e.final_observation, obs_dim)):
            if arr is None:
                continue
            arr = np.asarray(arr)
            if key in ("observations", "actions") and (arr.ndim != 2 or len(arr) != T):
                raise ConfigError(f"dataset {ds.name}, episode {i}: '{key}' has shape {arr.shape} but the episode "
                                  f"has {T} rewards; give {T} rows of {key} per episode")
            if width is not None and arr.shape[-1] != width:
                raise ConfigError(f"dataset {ds.name}, episode {i}: '{key}' is {arr.shape[-1]} wide but the "
                                  f"environment's is {width}; use data recorded in this environment or change it")
            if not np.isfinite(arr).all():
                at = "" if key == "final_observation" else \
                    f" (first at step {int(np.argwhere(~np.isfinite(arr.reshape(T, -1)))[0][0])})"
                raise ConfigError(f"dataset {ds.name}, episode {i}: '{key}' holds NaN or infinite values{at}; "
                                  "clean or drop those rows")


def check_matches_env(ds: TrajectoryDataset, env) -> None:
    """The dataset must fit the environment it will be finetuned in."""
    obs_dim = obs_width(env.observation_space)
    if ds.obs_dim != obs_dim:
        raise ConfigError(f"dataset {ds.name} has observation dimension {ds.obs_dim} but {env.spec.id} has "
                          f"{obs_dim}; use a dataset recorded in {env.spec.id} or change --env")
    if isinstance(env.action_space, gym.spaces.Discrete):
        _check_indices(ds, env.spec.id, int(env.action_space.n))
        return
    act_dim = env.action_space.shape[0]
    if ds.act_dim != act_dim:
        raise ConfigError(f"dataset {ds.name} has action dimension {ds.act_dim} but {env.spec.id} has "
                          f"{act_dim}; use a dataset recorded in {env.spec.id} or change --env")
    low, high = env.action_space.low, env.action_space.high
    tol = 1e-3 * (high - low)  # float32 round-off of actions recorded at the bounds
    a_min = np.min([e.actions.min(0) for e in ds.episodes], axis=0)
    a_max = np.max([e.actions.max(0) for e in ds.episodes], axis=0)
    if np.any(a_min < low - tol) or np.any(a_max > high + tol):
        raise ConfigError(f"dataset {ds.name} has actions in [{a_min.min():.3g}, {a_max.max():.3g}], outside "
                          f"{env.spec.id}'s bounds [{low.min():.3g}, {high.max():.3g}]; rescale or clip the "
                          "actions to the environment's action space")


