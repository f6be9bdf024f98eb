"""Loading offline data from the formats of the field into a ``TrajectoryDataset``."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from ..config import ConfigError
from .trajectories import Episode, TrajectoryDataset, episode_ends, flatten_episodes, split_episodes

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
        meta = json.loads(str(arrays.pop("metadata"))) if "metadata" in arrays else {}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError: all mean an unreadable file
        raise ConfigError(f"cannot read dataset {path}: {e}; it is truncated or not an .npz file") from e
    if not isinstance(meta, dict):
        raise ConfigError(f"dataset {path}: 'metadata' must be a JSON object; rewrite it with odt.data.save_npz")
    if "next_observations" in arrays and "final_observations" not in arrays and _has(arrays, REQUIRED):
        arrays["final_observations"] = _rows_at_ends(arrays, arrays.pop("next_observations"), str(path))
    arrays["metadata"] = meta
    return arrays


def _read_hdf5(path: Path) -> dict:
    import h5py

    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist; check the path")
    try:
        with h5py.File(path, "r") as f:
            # Read straight into float32 and take only the next observations that end an episode
            # (the others repeat 'observations'): a 1M-step file then costs its raw size once.
            arrays = {k: (f[k].astype(np.float32)[()] if f[k].dtype.kind == "f" else f[k][()])
                      for k in REQUIRED + ("final_observations",) if isinstance(f.get(k), h5py.Dataset)}
            if isinstance(f.get("next_observations"), h5py.Dataset) and _has(arrays, REQUIRED):
                nxt = f["next_observations"]
                arrays["final_observations"] = _rows_at_ends(arrays, nxt, str(path))
            meta = dict(f.attrs)
    except OSError as e:
        raise ConfigError(f"cannot read dataset {path}: {e}; it is truncated or not an HDF5 file") from e
    arrays["metadata"] = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                          for k, v in meta.items() if isinstance(v, (str, bytes, int, float, np.generic))}
    return arrays


def _has(a: dict, keys) -> bool:
    return all(k in a for k in keys)


def _rows_at_ends(a: dict, next_observations, name: str) -> np.ndarray:
    n = len(a["rewards"])
    if len(next_observations) != n:
        raise ConfigError(f"dataset {name}: 'next_observations' has {len(next_observations)} rows but 'rewards' "
                          f"has {n}; all arrays must have one row per transition")
    ends = episode_ends(a["terminals"], a["timeouts"])
    return np.asarray(next_observations[ends] if len(ends) else next_observations[:0], np.float32)


def _from_arrays(a: dict, name: str) -> TrajectoryDataset:
    missing = [k for k in REQUIRED if k not in a]
    if missing:
        raise ConfigError(f"dataset {name} lacks the key(s) {', '.join(missing)}; a D4RL-format file needs "
                          f"{', '.join(REQUIRED)}")
    n = len(a["rewards"])
    for k in REQUIRED:
        if len(a[k]) != n:
            raise ConfigError(f"dataset {name}: '{k}' has {len(a[k])} rows but 'rewards' has {n}; "
                              "all arrays must have one row per transition")
    if n == 0:
        raise ConfigError(f"dataset {name} is empty; it needs at least one transition")
    obs = np.asarray(a["observations"], np.float32)
    act = np.asarray(a["actions"], np.float32)
    if obs.ndim == 1:
        obs = obs[:, None]
    if act.ndim == 1:
        act = act[:, None]
    final = a.get("final_observations")
    if final is not None:
        n_eps = len(episode_ends(a["terminals"], a["timeouts"]))
        if len(final) != n_eps:
            raise ConfigError(f"dataset {name}: 'final_observations' has {len(final)} rows for {n_eps} episodes; "
                              "it needs one row per episode")
        final = np.asarray(final, np.float32).reshape(n_eps, -1)
    episodes = split_episodes(obs, act, np.asarray(a["rewards"], np.float32).reshape(-1),
                              a["terminals"], a["timeouts"], final)
    meta = a.get("metadata", {}) or {}
    env_id = meta.get("env_id") or meta.get("env_name")
    return TrajectoryDataset(episodes, env_id=env_id, name=name, metadata=meta)


def _load_minari(dataset_id: str, download: bool) -> TrajectoryDataset:
    import minari
    from gymnasium import spaces

    local = sorted(minari.list_local_datasets().keys())
    if dataset_id not in local:
        if not download:
            where = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
            raise ConfigError(f"Minari dataset {dataset_id!r} is not in the local store ({where}); local: "
                              f"{', '.join(local) or 'none'}; pass --download to fetch it")
        try:
            minari.download_dataset(dataset_id)
        except Exception as e:  # network or unknown remote id: both are the user's to fix
            raise ConfigError(f"cannot download Minari dataset {dataset_id!r}: {str(e).splitlines()[0]}; "
                              "check the id with `minari list remote` and the network") from e
    ds = minari.load_dataset(dataset_id)
    for what, space in (("observation", ds.observation_space), ("action", ds.action_space)):
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ConfigError(f"Minari dataset {dataset_id} has a {type(space).__name__} {what} space; odt needs "
                              "flat Box spaces (flatten dict observations into a new dataset first)")
    source = ds.storage.data_path / "main_data.hdf5"
    stamp = source.stat() if source.is_file() else None
    from .embedded import cache_dir

    cache = None if stamp is None else (
        cache_dir() / "minari" / f"{dataset_id.replace('/', '__')}-{stamp.st_size}-{stamp.st_mtime_ns}.npz")
    if cache is not None and cache.is_file():
        return _from_arrays(_read_npz(cache), dataset_id)
    arrays = _read_minari_hdf5(source, ds) if stamp is not None else _read_minari_episodes(ds)
    spec = ds.spec.env_spec
    meta = {k: v for k, v in ds.storage.metadata.items()
            if k in ("ref_min_score", "ref_max_score", "algorithm_name", "minari_version")}
    arrays["metadata"] = {"env_id": spec.id if spec else None, "minari_id": dataset_id, **meta}
    result = _from_arrays(arrays, dataset_id)
    if cache is not None:
        # A flat copy loads in well under a second; reading thousands of HDF5 episode groups does not.
        cache.parent.mkdir(parents=True, exist_ok=True)
        _write_npz(arrays, cache, compress=False)
    return result


def _read_minari_hdf5(path: Path, ds) -> dict:
    """Minari's HDF5 store (one group per episode) into flat D4RL-style arrays, with h5py's
    low-level calls that read into the final arrays: the high-level API costs about 0.2 ms per
    dataset opened, 40 s for the 46k episodes of a random 1M-step dataset, this about a quarter."""
    import h5py
    from h5py import h5d, h5g, h5s

    n, n_eps = ds.total_steps, ds.total_episodes
    obs = np.empty((n + 1, ds.observation_space.shape[0]), np.float32)  # +1: the last episode's s_{T+1}
    act = np.empty((n, ds.action_space.shape[0]), np.float32)
    rew = np.empty(n, np.float32)
    term_flags = np.zeros(n, np.bool_)
    final = np.empty((n_eps, obs.shape[1]), np.float32)
    ends = np.empty(n_eps, np.int64)
    terminated = np.empty(n_eps, np.bool_)
    p = 0
    with h5py.File(path, "r", rdcc_nbytes=0) as f:
        # Capped, HDF5's metadata cache stays small (uncapped it took 60 MB of RSS over 2k episode
        # groups); at 1 MB its lookups thrash and the load takes twice as long as at 2 MB.
        mdc = f.id.get_mdc_config()
        mdc.set_initial_size, mdc.initial_size, mdc.min_size, mdc.max_size = True, 2 << 20, 1 << 20, 2 << 20
        f.id.set_mdc_config(mdc)
        for i, ep in enumerate(ds.episode_indices):
            g = h5g.open(f.id, f"episode_{ep}".encode())
            d = h5d.open(g, b"rewards")
            t = d.shape[0]
            if p + t > n:
                raise ConfigError(f"Minari dataset {ds.spec.dataset_id} holds more steps than its metadata says "
                                  f"({n}); it is corrupt: download or create it again")
            d.read(h5s.ALL, h5s.ALL, rew[p:p + t])
            h5d.open(g, b"actions").read(h5s.ALL, h5s.ALL, act[p:p + t])
            # T+1 observations: the extra row lands where the next episode starts, so keep it first.
            h5d.open(g, b"observations").read(h5s.ALL, h5s.ALL, obs[p:p + t + 1])
            final[i] = obs[p + t]
            h5d.open(g, b"terminations").read(h5s.ALL, h5s.ALL, term_flags[p:p + t])
            terminated[i], ends[i] = term_flags[p + t - 1], p + t - 1
            p += t
    terminals = np.zeros(n, np.bool_)
    timeouts = np.zeros(n, np.bool_)
    terminals[ends[terminated]] = True
    timeouts[ends[~terminated]] = True  # an episode that did not terminate was cut: truncated
    return dict(observations=obs[:n], actions=act, rewards=rew, terminals=terminals, timeouts=timeouts,
                final_observations=final)


def _read_minari_episodes(ds) -> dict:
    """Any other Minari storage format, through Minari's own iterator."""
    return flatten_episodes([
        Episode(np.asarray(e.observations[:-1], np.float32), np.asarray(e.actions, np.float32),
                np.asarray(e.rewards, np.float32), terminated=bool(e.terminations[-1]),
                final_observation=np.asarray(e.observations[-1], np.float32))
        for e in ds.iterate_episodes()])


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


def save_npz(ds: TrajectoryDataset, path: Path, compress: bool = True) -> None:
    """Write the project's own format: D4RL's flat arrays, one row of ``final_observations`` per
    episode (s_{T+1}, in place of D4RL's full ``next_observations``) and JSON metadata."""
    _write_npz({**flatten_episodes(ds.episodes), "metadata": {"env_id": ds.env_id, **ds.metadata}}, path, compress)


def _write_npz(arrays: dict, path: Path, compress: bool) -> None:
    """Atomically: a reader never sees half a file, and an existing one is replaced only when whole."""
    arrays = dict(arrays, metadata=np.array(json.dumps(arrays.get("metadata") or {})))
    # A name of this writer's own: runs generating the same dataset at once must not share one.
    tmp = Path(f"{path}.{os.getpid()}-{threading.get_ident()}.tmp.npz")
    try:
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
