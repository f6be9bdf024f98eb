"""Embedded datasets: shipped behaviour-policy weights, replayed deterministically into a dataset
on first use and cached. No network and no policy training is needed."""
from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import numpy as np

from .trajectories import Episode, TrajectoryDataset

ASSETS = Path(__file__).parent / "assets"
GENERATOR_VERSION = 1

EMBEDDED: dict[str, dict] = {
    "odt/hopper-medium": {"env_id": "Hopper-v5", "policy": "hopper_medium.safetensors",
                          "transitions": 200_000, "seed": 1},
    "odt/hopper-random": {"env_id": "Hopper-v5", "policy": None, "transitions": 100_000, "seed": 2},
}


def cache_dir() -> Path:
    return Path(os.environ.get("ODT_CACHE", Path.home() / ".cache" / "odt")) / "datasets"


def cache_path(name: str) -> Path:
    return cache_dir() / f"{name.replace('/', '__')}-g{GENERATOR_VERSION}.npz"


def load_embedded(name: str, log=print) -> TrajectoryDataset:
    from .sources import _from_arrays, _read_npz, save_npz

    path = cache_path(name)
    if not path.is_file():
        entry = EMBEDDED[name]
        log(f"[data] generating {name} ({entry['transitions']} transitions in {entry['env_id']}) into {path}")
        ds = generate(entry["env_id"], entry["transitions"], entry["seed"],
                      None if entry["policy"] is None else ASSETS / entry["policy"], name=name)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_npz(ds, path)
    ds = _from_arrays(_read_npz(path), name)
    ds.name = name
    return ds


def generate(env_id: str, transitions: int, seed: int, policy_path: Path | None, name: str = "",
             n_envs: int = 10) -> TrajectoryDataset:
    """Record exactly ``transitions`` steps of a behaviour policy (sampled actions) or of uniform
    random actions, over ``n_envs`` environments stepped together. Episodes are cut at the
    environment's own termination and time limit; the last one at the budget (truncated)."""
    from .generate import BehaviourPolicy

    policy = BehaviourPolicy.load(policy_path) if policy_path is not None else None
    rng = np.random.default_rng(seed)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(n_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    bufs = [([], [], []) for _ in range(n_envs)]
    episodes: list[Episode] = []
    total = 0
    while total < transitions:
        if policy is None:
            act = rng.uniform(low, high, size=(n_envs, len(low))).astype(np.float32)
        else:
            act = policy.act(obs, rng)
        nxt, rew, term, trunc, info = envs.step(act)
        for i in range(n_envs):
            o, a, r = bufs[i]
            o.append(obs[i]); a.append(act[i]); r.append(rew[i])
            total += 1
            if term[i] or trunc[i] or total >= transitions:
                final = info["final_obs"][i] if (term[i] or trunc[i]) else nxt[i]
                episodes.append(Episode(np.array(o, np.float32), np.array(a, np.float32), np.array(r, np.float32),
                                        terminated=bool(term[i]), truncated=not term[i], final_observation=final))
                bufs[i] = ([], [], [])
            if total >= transitions:
                # The budget is spent mid-step: keep every partial episode, cut (truncated).
                for j in range(n_envs):
                    o, a, r = bufs[j]
                    if o:
                        episodes.append(Episode(np.array(o, np.float32), np.array(a, np.float32),
                                                np.array(r, np.float32), truncated=True,
                                                final_observation=nxt[j] if j < i else obs[j]))
                break
        obs = nxt
    envs.close()
    meta = {"env_id": env_id, "generator": "odt.data.embedded", "generator_version": GENERATOR_VERSION,
            "seed": seed, "behaviour": policy.meta if policy is not None else "uniform random"}
    return TrajectoryDataset(episodes, env_id=env_id, name=name, metadata=meta)
