"""Embedded datasets, available with no network and no policy training: medium and random are
replayed deterministically from shipped behaviour-policy weights (or uniform actions) on first use
and cached, pointmaze-umaze is recorded the same way with the waypoint controller; medium-replay, a SAC replay buffer that no replay of a final policy can reproduce,
ships as data (6.5 MB)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..cache import cache_subdir, verified
from ..envs.reward_hill import hill_reward
from .formats import from_arrays, read_npz, save_npz
from .generate import BehaviourPolicy, collect
from .trajectories import Episode, TrajectoryDataset
from .waypoints import collect_waypoints, waypoint_reference

ASSETS = Path(__file__).parent / "assets"
GENERATOR_VERSION = 2  # 2: the behaviour policy acts in float64 numpy (thread-count independent)

EMBEDDED: dict[str, dict] = {
    # D4RL's medium recipe: SAC trained until its sampled-action return passes a third of D4RL's
    # expert return (the policy ships; `command` trained it), then 200k steps of sampled actions.
    "odt/hopper-medium": {"env_id": "Hopper-v5", "policy": "hopper_medium.safetensors",
                          "transitions": 200_000, "seed": 1,
                          "command": "odt data generate --env Hopper-v5 --quality medium --seed 0 "
                                     "--transitions 200000 --out hopper/medium-v0"},
    "odt/walker2d-medium": {"env_id": "Walker2d-v5", "policy": "walker2d_medium.safetensors",
                            "transitions": 200_000, "seed": 1,
                            "command": "odt data generate --env Walker2d-v5 --quality medium --seed 0 "
                                       "--transitions 200000 --out walker2d/medium-v0"},
    "odt/halfcheetah-medium": {"env_id": "HalfCheetah-v5", "policy": "halfcheetah_medium.safetensors",
                               "transitions": 200_000, "seed": 1,
                               "command": "odt data generate --env HalfCheetah-v5 --quality medium --seed 0 "
                                          "--transitions 200000 --out halfcheetah/medium-v0"},
    # Discrete actions: PPO trained to a third of the episode cap (500), 100k steps of sampled actions.
    "odt/cartpole-medium": {"env_id": "CartPole-v1", "policy": "cartpole_medium.safetensors",
                            "transitions": 100_000, "seed": 1,
                            "command": "odt data generate --env CartPole-v1 --quality medium --seed 0 "
                                       "--transitions 100000 --eval-every 2000 --eval-episodes 10 "
                                       "--out cartpole/medium-v0"},
    "odt/cartpole-random": {"env_id": "CartPole-v1", "policy": None, "transitions": 50_000, "seed": 2},
    "odt/hopper-medium-replay": {"env_id": "Hopper-v5", "file": "hopper_medium_replay.npz", "transitions": 114_999},
    "odt/hopper-random": {"env_id": "Hopper-v5", "policy": None, "transitions": 100_000, "seed": 2},
    # PointMaze by Minari's recipe (waypoints.py), at a fifth of D4RL's 1M steps: about 15 s.
    "odt/pointmaze-umaze": {"env_id": "PointMaze_UMaze-v3", "recipe": "waypoints", "transitions": 200_000, "seed": 3,
                            "version": 1},  # the recipe's own version: a change to it remakes only this one
    # The ViDT project page's toy: built in code, no cache.
    "odt/reward-hill": {"env_id": "odt/RewardHill-v0", "builder": "reward_hill", "transitions": 128, "seed": 0},
}


def cache_path(name: str) -> Path:
    version = EMBEDDED.get(name, {}).get("version", GENERATOR_VERSION)
    return cache_subdir("datasets") / f"{name.replace('/', '__')}-g{version}.npz"


def _stderr(line: str) -> None:
    # Progress goes to stderr: `odt data inspect --json` keeps stdout for its one JSON object.
    print(line, file=sys.stderr, flush=True)


def load_embedded(name: str, log=_stderr) -> TrajectoryDataset:
    entry = EMBEDDED[name]
    if "builder" in entry:
        return reward_hill_dataset(entry["seed"])
    if "file" in entry:
        path = ASSETS / entry["file"]
    else:  # generated into the cache, and served from there only while it matches its checksum
        path = cache_path(name)
        verified(Path(f"{path}.sha256"), [path], lambda: _generate(name, entry, path, log), f"[data] {name}",
                 "generating it again from its recipe", log)
    ds = from_arrays(read_npz(path), name)
    ds.name = name
    if "command" in entry:  # read from here, not the cache: a cache made before it was recorded lacks it
        ds.metadata["behaviour_command"] = entry["command"]
    return ds


def reward_hill_dataset(seed: int = 0, n_left: int = 100, n_right: int = 28,
                        left: tuple[float, float] = (-1.0, -0.95)) -> TrajectoryDataset:
    """The toy's offline data; ``left=(-1, 0)``, ``n_right=0`` spreads the actions over the whole
    rising side, where the action that earns a return g is sqrt(g) - 1 (the return-following test)."""
    rng = np.random.default_rng(seed)
    actions = np.concatenate([rng.uniform(*left, n_left), rng.uniform(0.5, 1.0, n_right)]).astype(np.float32)
    zero = np.zeros((1, 1), np.float32)
    episodes = [Episode(zero, np.array([[a]], np.float32), np.array([hill_reward(a)], np.float32),
                        terminated=True, final_observation=zero[0]) for a in actions]
    return TrajectoryDataset(episodes, env_id="odt/RewardHill-v0", name="odt/reward-hill",
                             metadata={"env_id": "odt/RewardHill-v0", "seed": seed,
                                       "description": f"{n_left} actions in [{left[0]:g}, {left[1]:g}], {n_right} in [0.5, 1]"})
def _generate(name: str, entry: dict, path: Path, log) -> None:
    log(f"[data] generating {name} ({entry['transitions']} transitions in {entry['env_id']}) into {path}")
    if entry.get("recipe") == "waypoints":
        ds = collect_waypoints(entry["env_id"], entry["transitions"], entry["seed"], name=name, log=log)
        ds.metadata["ref_min_score"], ds.metadata["ref_max_score"] = waypoint_reference(entry["env_id"])
    else:
        policy = None if entry["policy"] is None else BehaviourPolicy.load(ASSETS / entry["policy"])
        # 10 environments stepped together: part of the data (a change needs a new
        # GENERATOR_VERSION); more of them gained nothing measurable (the physics dominates).
        ds = collect(entry["env_id"], entry["transitions"], entry["seed"], policy, name=name, n_envs=10, log=log)
    ds.metadata["generator_version"] = entry.get("version", GENERATOR_VERSION)
    save_npz(ds, path)
