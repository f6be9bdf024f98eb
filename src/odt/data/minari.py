"""Minari datasets: loading from the local store (``--download`` fetches a missing one), with a
flat ``.npz`` copy in odt's cache, and writing a dataset into the store (``odt data generate``)."""
from __future__ import annotations

import contextlib
import difflib
import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

from ..cache import cache_subdir, verified
from ..config import ConfigError
from ..envs.make import flatten_goal, frame_shape, make_env, private_tempdir
from ..scores import reference_of
from .formats import from_arrays, read_npz, write_npz
from .trajectories import Episode, TrajectoryDataset, flatten_episodes, observation_rows


def load_minari(dataset_id: str, download: bool) -> TrajectoryDataset:
    import minari
    from gymnasium import spaces

    local = sorted(minari.list_local_datasets().keys())
    if dataset_id not in local:
        if not download:
            where = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
            close = difflib.get_close_matches(dataset_id, local, n=1, cutoff=0.75)
            raise ConfigError(f"Minari dataset {dataset_id!r} is not in the local store ({where}); "
                              + (f"did you mean {close[0]}? " if close else "")
                              + f"local: {', '.join(local) or 'none'}; pass --download to fetch it")
        try:
            minari.download_dataset(dataset_id)
        except Exception as e:  # network or unknown remote id: both are the user's to fix
            raise ConfigError(f"cannot download Minari dataset {dataset_id!r}: {str(e).splitlines()[0]}; "
                              "check the id with `minari list remote` and the network") from e
    ds = minari.load_dataset(dataset_id)
    obs_space = ds.observation_space
    goal = isinstance(obs_space, spaces.Dict) and {"observation", "desired_goal"} <= set(obs_space.spaces)
    parts = ([("observation", obs_space["observation"]), ("desired goal", obs_space["desired_goal"])] if goal
             else [("observation", obs_space)])
    for what, space in parts:  # flat, or stacked frames (C, H, W) of bytes
        if not isinstance(space, spaces.Box) or len(space.shape) not in (1, 3):
            raise ConfigError(f"Minari dataset {dataset_id} has a {type(space).__name__} {what} space; odt needs "
                              "flat Box observations, stacked frames, or a goal dict with Box 'observation' and "
                              "'desired_goal'")
    act = ds.action_space
    if not (isinstance(act, spaces.Discrete) or (isinstance(act, spaces.Box) and len(act.shape) == 1)):
        raise ConfigError(f"Minari dataset {dataset_id} has a {type(act).__name__} action space; odt needs a flat "
                          "Box or a Discrete one")
    source = ds.storage.data_path / "main_data.hdf5"
    if not source.is_file():  # another storage format: Minari's own iterator, not cached
        return from_arrays(_with_metadata(read_minari_episodes(ds, goal), ds, dataset_id), dataset_id)
    stamp = source.stat()
    name = f"{dataset_id.replace('/', '__')}-{stamp.st_size}-{stamp.st_mtime_ns}.npz"
    cache = cache_subdir("datasets") / "minari" / name
    # A flat copy loads in well under a second; reading thousands of HDF5 episode groups does not.
    def flat_copy() -> None:
        write_npz(_with_metadata(read_minari_hdf5(source, ds, goal), ds, dataset_id), cache, compress=False)

    verified(Path(f"{cache}.sha256"), [cache], flat_copy, f"the flat copy of {dataset_id}",
             "reading it again from the Minari store", lambda line: print(line, file=sys.stderr, flush=True))
    return from_arrays(read_npz(cache), dataset_id)


def _with_metadata(arrays: dict, ds, dataset_id: str) -> dict:
    spec = ds.spec.env_spec
    meta = {k: v for k, v in ds.storage.metadata.items()
            if k in ("ref_min_score", "ref_max_score", "algorithm_name", "minari_version")}
    arrays["metadata"] = {"env_id": spec.id if spec else None, "minari_id": dataset_id, **meta}
    return arrays


def _observation_rows(ds, goal: bool, n: int) -> tuple[np.ndarray, list, tuple | None]:
    """The flat observation array to read into (n + 1 rows: the last episode's s_{T+1}), the goal
    dict's parts (name, first column, width), and stacked frames' shape, which stay bytes (four
    84x84 frames a step: 28 KB, not 113)."""
    space = ds.observation_space
    if goal:
        widths = [space[k].shape[0] for k in ("observation", "desired_goal")]
        parts = [(b"observations/observation", 0, widths[0]), (b"observations/desired_goal", widths[0], widths[1])]
        return np.empty((n + 1, sum(widths)), np.float32), parts, None
    frames = frame_shape(space) or None
    return np.empty((n + 1, int(np.prod(space.shape))), np.uint8 if frames else np.float32), [], frames


def read_minari_hdf5(path: Path, ds, goal: bool = False) -> dict:
    """Minari's HDF5 store (one group per episode) into flat D4RL-style arrays, with h5py's
    low-level calls that read into the final arrays: the high-level API costs about 0.2 ms per
    dataset opened, 40 s for the 46k episodes of a random 1M-step dataset, this about a quarter.
    ``goal``: dict observations, flattened as ``GoalObservation`` does (observation, desired goal)."""
    import h5py
    from h5py import h5d, h5g, h5s

    n, n_eps = ds.total_steps, ds.total_episodes
    obs, parts, frames = _observation_rows(ds, goal, n)
    scratch = {name: np.empty((0, width), np.float32) for name, _, width in parts}
    discrete = ds.action_space.shape == ()  # one index a step, stored as a vector
    act = np.empty(n if discrete else (n, ds.action_space.shape[0]), np.float32)
    rew = np.empty(n, np.float32)
    term_flags = np.zeros(n, np.bool_)
    final = np.empty((n_eps, obs.shape[1]), obs.dtype)
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
            if not goal:  # stacked frames read into their flat rows, a view of the same memory
                rows = obs[p:p + t + 1]
                h5d.open(g, b"observations").read(h5s.ALL, h5s.ALL, rows.reshape(t + 1, *frames) if frames else rows)
            else:  # each part into a contiguous buffer, then into its columns
                for name, offset, width in parts:
                    if len(scratch[name]) < t + 1:
                        scratch[name] = np.empty((max(t + 1, 2 * len(scratch[name])), width), np.float32)
                    buf = scratch[name][:t + 1]
                    h5d.open(g, name).read(h5s.ALL, h5s.ALL, buf)
                    obs[p:p + t + 1, offset:offset + width] = buf
            final[i] = obs[p + t]
            h5d.open(g, b"terminations").read(h5s.ALL, h5s.ALL, term_flags[p:p + t])
            terminated[i], ends[i] = term_flags[p + t - 1], p + t - 1
            p += t
    terminals = np.zeros(n, np.bool_)
    timeouts = np.zeros(n, np.bool_)
    terminals[ends[terminated]] = True
    timeouts[ends[~terminated]] = True  # an episode that did not terminate was cut: truncated
    return dict(observations=obs[:n], actions=act.reshape(n, -1), rewards=rew, terminals=terminals,
                timeouts=timeouts, final_observations=final)


def read_minari_episodes(ds, goal: bool = False) -> dict:
    """Any other Minari storage format, through Minari's own iterator."""
    def flat(o):
        if goal:
            return flatten_goal(o["observation"], o["desired_goal"])
        return observation_rows(o)

    episodes = []
    for e in ds.iterate_episodes():
        o = flat(e.observations)
        actions = np.asarray(e.actions, np.float32).reshape(len(e.rewards), -1)  # a discrete index: one column
        episodes.append(Episode(o[:-1], actions, np.asarray(e.rewards, np.float32),
                                terminated=bool(e.terminations[-1]), final_observation=o[-1]))
    return flatten_episodes(episodes)


def write_minari(ds: TrajectoryDataset, dataset_id: str, env_id: str, algorithm: str, description: str,
                 extra: dict, reference: tuple[float, float] | None = None):
    """Write ``ds`` into the local Minari store with the ``minari`` API; ``extra`` goes into the
    dataset's metadata under ``odt``. ``reference`` (else D4RL's, where known) is recorded as the
    dataset's ref_min_score / ref_max_score. Observations are stored flat, as odt reads them."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    with contextlib.closing(make_env(env_id)) as env:
        obs_space, act_space = env.observation_space, env.action_space
    frames = bool(frame_shape(obs_space))  # stacked frames are stored as the environment gives them
    discrete = isinstance(act_space, gym.spaces.Discrete)  # one index a step
    buffers = []
    for i, e in enumerate(ds.episodes):
        last = np.arange(len(e)) == len(e) - 1
        obs = np.concatenate([e.observations, e.final_observation[None]])
        buffers.append(EpisodeBuffer(id=i, observations=obs.reshape(len(obs), *obs_space.shape) if frames else obs,
                                     actions=e.actions[:, 0].astype(np.int64) if discrete else e.actions,
                                     rewards=e.rewards, terminations=last & e.terminated,
                                     truncations=last & (not e.terminated), infos={}))
    ref = reference or reference_of(env_id)
    v = extra.get("versions", {})
    # Goal dicts arrive flattened: stored as the flat Box odt reads.
    box = obs_space if frames else gym.spaces.Box(-np.inf, np.inf, (ds.obs_dim,), np.float32)
    with private_tempdir():  # minari makes the environment itself, and a maze leaves its model file
        dataset = minari.create_dataset_from_buffers(
            dataset_id, buffers, env=env_id, eval_env=env_id, observation_space=box, action_space=act_space,
            algorithm_name=algorithm,
            author="odt data generate",
            author_email="odt@localhost", code_permalink="https://pypi.org/project/odt/",
            description=description, ref_min_score=ref[0] if ref else None, ref_max_score=ref[1] if ref else None,
            requirements=[f"{k}=={v[k]}" for k in ("gymnasium", "mujoco") if k in v])
    dataset.storage.update_metadata({"odt": extra})
    return dataset
