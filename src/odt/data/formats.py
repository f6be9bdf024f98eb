"""The file formats of offline data: ``.npz`` (odt's own, D4RL's flat arrays plus one
``final_observations`` row per episode and JSON metadata) and D4RL-format HDF5, read into and
written from flat arrays."""
from __future__ import annotations

import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np

from ..config import ConfigError
from .trajectories import TrajectoryDataset, episode_ends, flatten_episodes, observation_rows, split_episodes


REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")


def read_npz(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist; check the path")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays.pop("metadata"))) if "metadata" in arrays else {}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError: all mean an unreadable file
        raise ConfigError(f"cannot read dataset {path}: {e}; it is truncated or not an .npz file") from e
    if not isinstance(meta, dict):
        raise ConfigError(f"dataset {path}: 'metadata' must be a JSON object; rewrite it with odt.data.formats.save_npz")
    if "next_observations" in arrays and "final_observations" not in arrays and has_keys(arrays, REQUIRED):
        arrays["final_observations"] = rows_at_ends(arrays, arrays.pop("next_observations"), str(path))
    arrays["metadata"] = meta
    return arrays


def read_hdf5(path: Path) -> dict:
    import h5py

    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist; check the path")
    try:
        with h5py.File(path, "r") as f:
            # Read straight into float32 and take only the next observations that end an episode
            # (the others repeat 'observations'): a 1M-step file then costs its raw size once.
            arrays = {k: (f[k].astype(np.float32)[()] if f[k].dtype.kind == "f" else f[k][()])
                      for k in REQUIRED + ("final_observations",) if isinstance(f.get(k), h5py.Dataset)}
            if isinstance(f.get("next_observations"), h5py.Dataset) and has_keys(arrays, REQUIRED):
                nxt = f["next_observations"]
                arrays["final_observations"] = rows_at_ends(arrays, nxt, str(path))
            meta = dict(f.attrs)
    except OSError as e:
        raise ConfigError(f"cannot read dataset {path}: {e}; it is truncated or not an HDF5 file") from e
    arrays["metadata"] = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
                          for k, v in meta.items() if isinstance(v, (str, bytes, int, float, np.generic))}
    return arrays


def has_keys(a: dict, keys) -> bool:
    return all(k in a for k in keys)


def rows_at_ends(a: dict, next_observations, name: str) -> np.ndarray:
    n = len(a["rewards"])
    if len(next_observations) != n:
        raise ConfigError(f"dataset {name}: 'next_observations' has {len(next_observations)} rows but 'rewards' "
                          f"has {n}; all arrays must have one row per transition")
    ends = episode_ends(a["terminals"], a["timeouts"])
    return np.asarray(next_observations[ends] if len(ends) else next_observations[:0], np.float32)


def from_arrays(a: dict, name: str) -> TrajectoryDataset:
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
    obs = observation_rows(a["observations"])
    act = np.asarray(a["actions"], np.float32)
    if act.ndim == 1:
        act = act[:, None]
    final = a.get("final_observations")
    if final is not None:
        n_eps = len(episode_ends(a["terminals"], a["timeouts"]))
        if len(final) != n_eps:
            raise ConfigError(f"dataset {name}: 'final_observations' has {len(final)} rows for {n_eps} episodes; "
                              "it needs one row per episode")
        final = observation_rows(final)
    episodes = split_episodes(obs, act, np.asarray(a["rewards"], np.float32).reshape(-1),
                              a["terminals"], a["timeouts"], final)
    meta = a.get("metadata", {}) or {}
    env_id = meta.get("env_id") or meta.get("env_name")
    return TrajectoryDataset(episodes, env_id=env_id, name=name, metadata=meta)


def save_npz(ds: TrajectoryDataset, path: Path, compress: bool = True) -> None:
    """Write the project's own format: D4RL's flat arrays, one row of ``final_observations`` per
    episode (s_{T+1}, in place of D4RL's full ``next_observations``) and JSON metadata."""
    write_npz({**flatten_episodes(ds.episodes), "metadata": {"env_id": ds.env_id, **ds.metadata}}, path, compress)


def write_npz(arrays: dict, path: Path, compress: bool) -> None:
    """Atomically: a reader never sees half a file, and an existing one is replaced only when whole."""
    arrays = dict(arrays, metadata=np.array(json.dumps(arrays.get("metadata") or {})))
    # A name of this writer's own: runs generating the same dataset at once must not share one.
    tmp = Path(f"{path}.{os.getpid()}-{threading.get_ident()}.tmp.npz")
    try:
        if compress:
            np.savez_compressed(tmp, **arrays)
        else:
            _savez_stored(tmp, arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _savez_stored(path: Path, arrays: dict, slice_bytes: int = 1 << 20) -> None:
    """``np.savez``'s file, without its 16 MB staging buffer per array (a quarter of the memory a
    first Minari load of a million PointMaze steps takes): each array is written in 1 MB slices."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in arrays.items():
            a = np.asarray(a, order="C")  # ascontiguousarray would make a 0-d array 1-d
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(a))
                data = memoryview(a.reshape(-1).view(np.uint8)) if a.size else memoryview(b"")
                for i in range(0, len(data), slice_bytes):
                    f.write(data[i:i + slice_bytes])
