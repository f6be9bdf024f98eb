"""Training from Python: ``odt.train`` runs the loop `odt run` runs, on an environment or offline
data the user holds in memory, and hands back the run's summary and its policy."""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from .config import Config, ConfigError, preset
from .data.trajectories import Episode, TrajectoryDataset, is_frames, observation_rows
from .policy import Policy, load_policy
from .setup import init_start, run_command
from .shipped import resolve

@dataclass
class Trained:
    """What ``train`` returns: summary.json's content, the final policy (None for the sac and iql
    baselines, which keep no transformer) and the run directory."""

    summary: dict
    policy: Policy | None
    run_dir: Path


def train(config: Config | Mapping | str | None = None, *, env: str | Callable[[], gym.Env] | None = None,
          dataset: TrajectoryDataset | Iterable[Mapping] | str | None = None, pretrain: bool = True,
          finetune: bool = True, **settings) -> Trained:
    """Pretrain on ``dataset``, then finetune online in ``env``, writing the run directory `odt run`
    writes.

    ``config``: a ``Config``, a preset's name, or a mapping of settings (``{"preset": "cpu-small",
    "online_steps": 5000}``); ``settings`` override it by name (``lr=1e-4``), as flags do.
    ``env``: a Gymnasium id, or a callable that makes a ``gymnasium.Env`` (registered here as
    odt-python/CLASS-v0, which config.json records; give episodes a ``TimeLimit`` or set
    ``max_ep_len``; `odt eval` and `--resume` of such a run need it registered again: call
    ``odt.api.register_env`` first).
    ``dataset``: a source name or path (as ``--dataset``), a ``TrajectoryDataset``, or episodes as
    dicts of arrays: ``observations`` (T rows, or T + 1 with the final one, as Minari stores
    them), ``actions``, ``rewards``, and optionally ``terminations`` (or ``terminals``, a flag or an
    array whose last entry counts). ``pretrain``/``finetune``: which phases run (both: `odt run`)."""
    cfg = _config(config, settings).validate()  # every setting, before anything is made or written
    if not (pretrain or finetune):
        raise ConfigError("odt.train: pretrain=False and finetune=False leave nothing to run")
    if not pretrain and cfg.init is None:
        raise ConfigError("odt.train(finetune only) needs init=RUN_DIR, a pretrained run or a Hugging Face model "
                          "directory (or pretrain=True)")
    data = None
    if callable(env):
        cfg.env = register_env(env, cfg.max_ep_len)
    elif isinstance(env, str):
        cfg.env = env
    elif env is not None:
        raise ConfigError(f"env must be a Gymnasium id or a function that makes a gymnasium.Env, got "
                          f"{type(env).__name__} {env!r:.40}")
    if isinstance(dataset, (str, os.PathLike)):
        cfg.dataset = str(dataset)
    elif dataset is not None:
        data = as_dataset(dataset, cfg.env)
        cfg.dataset = f"in-memory: {data.name}"
    command = "run" if pretrain and finetune else "pretrain" if pretrain else "finetune"
    cfg.init = resolve(cfg.init)
    given = [f"--{name.replace('_', '-')}" for name in settings]  # what a Hugging Face model's config may not override
    summary = run_command(cfg, command, pretrain, finetune, init_start(cfg, command, given), dataset=data)
    policy = None if cfg.baseline else load_policy(cfg.out)
    return Trained(summary, policy, Path(cfg.out))


def _config(config, settings: dict) -> Config:
    if "preset" in settings:  # the defaults' name: it goes where config names them, never beside them
        name = settings.pop("preset")
        if config is None or config == name:
            config = name
        elif isinstance(config, Mapping) and config.get("preset", name) == name:
            config = {**config, "preset": name}
        else:
            raise ConfigError(f"preset={name!r} and config={config!r:.60} both name the defaults; give the preset "
                              "once, as config='NAME' or config={'preset': 'NAME', ...}")
    if isinstance(config, Config):
        cfg = dataclasses.replace(config)
    elif isinstance(config, str):
        cfg = dataclasses.replace(preset(config), preset=config)  # config.json says which preset the run used
    elif config is None or isinstance(config, Mapping):
        values = dict(config or {})
        name = values.pop("preset", None)
        cfg = Config.from_dict({**(preset(name).to_dict() if name else {}), "preset": name, **values})
    else:
        raise ConfigError(f"config must be a Config, a preset's name or a mapping of settings, got "
                          f"{type(config).__name__}")
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; see `odt run --help` (flags as names: lr=...)")
    return Config.from_dict({**cfg.to_dict(), **settings})


def register_env(make: Callable[[], gym.Env], max_ep_len: int) -> str:
    """Register ``make`` with Gymnasium so that every part of odt (vector environments, evaluation,
    the horizon check) makes it as it makes any other; returns its id, odt-python/CLASS-v0 (the
    same for every run of one class, so that reports group them). The horizon is the one its own
    ``TimeLimit`` sets, else ``max_ep_len``."""
    probe = make()
    if not isinstance(probe, gym.Env):
        raise ConfigError(f"env: the function given made a {type(probe).__name__}, not a gymnasium.Env; give a "
                          "function that returns the environment")
    name, horizon, env = type(probe.unwrapped).__name__, None, probe
    while isinstance(env, gym.Wrapper) and horizon is None:
        horizon = getattr(env, "_max_episode_steps", None) if isinstance(env, gym.wrappers.TimeLimit) else None
        env = env.env
    probe.close()
    env_id = f"odt-python/{name}-v0"
    gym.registry.pop(env_id, None)  # this call's factory replaces an earlier one of the same class
    gym.register(env_id, entry_point=lambda **kwargs: make(), max_episode_steps=horizon or max_ep_len)
    return env_id


def as_dataset(data: TrajectoryDataset | Iterable[Mapping], env_id: str) -> TrajectoryDataset:
    if isinstance(data, TrajectoryDataset):  # copies: the run rescales actions in place
        return dataclasses.replace(data, episodes=[dataclasses.replace(e) for e in data.episodes])
    if isinstance(data, Mapping):
        raise ConfigError("dataset is one episode (a dict of arrays); give a list of episodes, [episode]")
    if not isinstance(data, Iterable):
        raise ConfigError(f"dataset must be a source name or path, a TrajectoryDataset, or a list of episodes "
                          f"(dicts of arrays), got {type(data).__name__} {data!r:.40}")
    episodes = [_episode(e, i) for i, e in enumerate(data)]
    if not episodes:
        raise ConfigError("dataset: no episodes given; pass a TrajectoryDataset or a list of dicts of arrays")
    return TrajectoryDataset(episodes, env_id=env_id, name=f"{len(episodes)} episodes from Python")


def _array(e: Mapping, key: str, i: int) -> np.ndarray:
    try:  # frames stay bytes, the rest becomes float32 (observation_rows flattens them)
        arr = np.asarray(e[key])
        arr = arr if key == "observations" and is_frames(arr) else arr.astype(np.float32)
    except (TypeError, ValueError) as err:
        arr = err
    if not isinstance(arr, np.ndarray) or arr.ndim == 0:
        raise ConfigError(f"dataset episode {i}: '{key}' must be an array of numbers, one row per step, got "
                          f"{type(e[key]).__name__} {e[key]!r:.40}")
    return arr


def _episode(e: Mapping, i: int) -> Episode:
    if not isinstance(e, Mapping):
        raise ConfigError(f"dataset episode {i} is a {type(e).__name__}, not a dict of arrays (observations, "
                          "actions, rewards)")
    missing = [k for k in ("observations", "actions", "rewards") if k not in e]
    if missing:
        raise ConfigError(f"dataset episode {i} lacks {', '.join(missing)}; each needs observations, actions, rewards")
    obs, actions, rewards = (_array(e, k, i) for k in ("observations", "actions", "rewards"))
    obs, actions, rewards = observation_rows(obs), actions.reshape(len(actions), -1), rewards.reshape(-1)
    T = len(rewards)
    if len(actions) != T or len(obs) not in (T, T + 1):
        raise ConfigError(f"dataset episode {i}: {len(obs)} observations, {len(actions)} actions, {T} rewards; "
                          "give T of each (or T + 1 observations, the last one final)")
    term = e.get("terminations", e.get("terminals", False))
    terminated = bool(np.asarray(term).reshape(-1)[-1]) if np.size(term) else False
    return Episode(obs[:T], actions, rewards, terminated=terminated, truncated=not terminated,
                   final_observation=obs[T] if len(obs) == T + 1 else None)
