"""Loading offline data from the formats of the field into a ``TrajectoryDataset``."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..config import ConfigError
from .trajectories import Episode, TrajectoryDataset, split_episodes

REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")


def load_dataset(source: str, download: bool = False) -> TrajectoryDataset:
    """An embedded dataset name (``odt/hopper-medium``), a ``.npz`` or D4RL-format ``.hdf5`` file,
    or a Minari dataset id."""
    from .embedded import EMBEDDED, load_embedded

    if source in EMBEDDED:
        ds = load_embedded(source)
    else:
        path = Path(source).expanduser()
        if path.suffix == ".npz":
            ds = _from_arrays(_read_npz(path), source)
        elif path.suffix in (".hdf5", ".h5"):
            ds = _from_arrays(_read_hdf5(path), source)
        elif path.exists():
            raise ConfigError(f"dataset {source}: unknown file type {path.suffix!r}; use .npz or .hdf5")
        elif "/" in source and not path.suffix:
            ds = _load_minari(source, download)
        else:
            raise ConfigError(f"dataset {source!r} not found: give an existing .npz/.hdf5 file, "
                              f"a Minari id, or one of {', '.join(EMBEDDED)}")
    _check(ds)
    return ds


def _read_npz(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist; check the path")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError: all mean an unreadable file
        raise ConfigError(f"cannot read dataset {path}: {e}; it is truncated or not an .npz file") from e
    if "metadata" in arrays:
        arrays["metadata"] = json.loads(str(arrays["metadata"]))
    return arrays


def _read_hdf5(path: Path) -> dict:
    import h5py

    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist; check the path")
    try:
        with h5py.File(path, "r") as f:
            arrays = {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
            meta = dict(f.attrs)
    except OSError as e:
        raise ConfigError(f"cannot read dataset {path}: {e}; it is truncated or not an HDF5 file") from e
    arrays["metadata"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in meta.items()
                          if isinstance(v, (str, bytes, int, float))}
    return arrays


def _from_arrays(a: dict, name: str) -> TrajectoryDataset:
    missing = [k for k in REQUIRED if k not in a]
    if missing:
        raise ConfigError(f"dataset {name} lacks the key(s) {', '.join(missing)}; a D4RL-format file needs "
                          f"{', '.join(REQUIRED)}")
    n = len(a["rewards"])
    for k in REQUIRED + ("next_observations",):
        if k in a and len(a[k]) != n:
            raise ConfigError(f"dataset {name}: '{k}' has {len(a[k])} rows but 'rewards' has {n}; "
                              "all arrays must have one row per transition")
    obs = np.asarray(a["observations"], np.float32)
    act = np.asarray(a["actions"], np.float32)
    if obs.ndim == 1:
        obs = obs[:, None]
    if act.ndim == 1:
        act = act[:, None]
    nxt = np.asarray(a["next_observations"], np.float32) if "next_observations" in a else None
    episodes = split_episodes(obs, act, np.asarray(a["rewards"], np.float32).reshape(-1),
                              a["terminals"], a["timeouts"], nxt)
    meta = a.get("metadata", {}) or {}
    env_id = meta.get("env_id") or meta.get("env_name")
    return TrajectoryDataset(episodes, env_id=env_id, name=name, metadata=meta)


def _load_minari(dataset_id: str, download: bool) -> TrajectoryDataset:
    try:
        import minari
    except ImportError as e:  # pragma: no cover
        raise ConfigError("Minari ids need the minari package: pip install minari") from e
    local = sorted(minari.list_local_datasets().keys())
    if dataset_id not in local:
        if download:
            minari.download_dataset(dataset_id)
        else:
            where = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
            raise ConfigError(f"Minari dataset {dataset_id!r} is not in the local store ({where}); local: "
                              f"{', '.join(local) or 'none'}; pass --download to fetch it")
    ds = minari.load_dataset(dataset_id)
    episodes = []
    for ep in ds.iterate_episodes():
        obs = np.asarray(ep.observations, np.float32)
        term = bool(ep.terminations[-1])  # an episode that did not terminate was cut: truncated
        episodes.append(Episode(obs[:-1], np.asarray(ep.actions, np.float32), np.asarray(ep.rewards, np.float32),
                                terminated=term, truncated=not term, final_observation=obs[-1]))
    spec = ds.spec.env_spec
    return TrajectoryDataset(episodes, env_id=spec.id if spec else None, name=dataset_id,
                             metadata={"minari_id": dataset_id})


def _check(ds: TrajectoryDataset) -> None:
    if not ds.episodes or ds.n_transitions == 0:
        raise ConfigError(f"dataset {ds.name} is empty; it needs at least one transition")
    for k in ("observations", "actions", "rewards"):
        if not all(np.isfinite(getattr(e, k)).all() for e in ds.episodes):
            raise ConfigError(f"dataset {ds.name}: '{k}' holds NaN or infinite values; clean or drop those rows")


def check_matches_env(ds: TrajectoryDataset, env) -> None:
    """The dataset must fit the environment it will be finetuned in."""
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    if ds.obs_dim != obs_dim:
        raise ConfigError(f"dataset {ds.name} has observation dimension {ds.obs_dim} but {env.spec.id} has "
                          f"{obs_dim}; use a dataset recorded in {env.spec.id} or change --env")
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


def save_npz(ds: TrajectoryDataset, path: Path) -> None:
    """Write the project's own format: D4RL's flat arrays plus JSON metadata."""
    eps = ds.episodes
    terminals = np.concatenate([np.eye(1, len(e), len(e) - 1, dtype=bool)[0] & e.terminated for e in eps])
    timeouts = np.concatenate([np.eye(1, len(e), len(e) - 1, dtype=bool)[0] & (not e.terminated) for e in eps])
    arrays = dict(observations=np.concatenate([e.observations for e in eps]),
                  actions=np.concatenate([e.actions for e in eps]),
                  rewards=np.concatenate([e.rewards for e in eps]), terminals=terminals, timeouts=timeouts,
                  metadata=np.array(json.dumps({"env_id": ds.env_id, **ds.metadata})))
    if all(e.final_observation is not None for e in eps):
        arrays["next_observations"] = np.concatenate(
            [np.concatenate([e.observations[1:], e.final_observation[None]]) for e in eps])
    tmp = Path(str(path) + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
