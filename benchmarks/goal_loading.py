"""Time and memory of loading a 1M-step Minari dataset with goal dict observations, stored as
Minari stores its D4RL PointMaze ports (observation, achieved_goal, desired_goal per step).

    python benchmarks/goal_loading.py [--transitions 1000000] [--reps 3] [--dir DIR]

The data are real PointMaze_UMaze-v3 steps of odt's waypoint recipe (about a minute), written once
into DIR with the minari library. Each load runs in a fresh process (data_loading.py's measurement:
seconds of `odt.load_dataset`, growth of peak resident memory); "1st" flattens into odt's cache.
Targets: <= 5 s and <= 2x the raw float32 arrays odt keeps (observation + goal, action, reward).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ENV = "PointMaze_UMaze-v3"


def build(directory: Path, n: int) -> str:
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    from odt.data.waypoints import collect_waypoints
    from odt.envs.make import make_env

    os.environ["MINARI_DATASETS_PATH"] = str(directory / "minari")
    dataset_id = f"bench/pointmaze-goal/n{n}-v0"
    if dataset_id in minari.list_local_datasets():
        return dataset_id
    ds = collect_waypoints(ENV, n, seed=0, log=lambda line: None)
    buffers = []
    for i, e in enumerate(ds.episodes):
        o = np.concatenate([e.observations, e.final_observation[None]])
        obs = {"observation": o[:, :4], "achieved_goal": o[:, :2], "desired_goal": o[:, 4:]}
        last = np.arange(len(e)) == len(e) - 1
        buffers.append(EpisodeBuffer(id=i, observations=obs, actions=e.actions, rewards=e.rewards,
                                     terminations=last & e.terminated, truncations=last & (not e.terminated), infos={}))
    env = make_env(ENV, evaluation=False).unwrapped  # its dict spaces
    minari.create_dataset_from_buffers(dataset_id, buffers, env=ENV, observation_space=env.observation_space,
                                       action_space=env.action_space, algorithm_name="waypoints",
                                       author="odt benchmark", author_email="odt@localhost",
                                       code_permalink="https://pypi.org/project/odt/", description="benchmark")
    return dataset_id


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transitions", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "odt-bench-goal")
    args = p.parse_args()
    dataset_id = build(args.dir, args.transitions)
    raw_mb = args.transitions * (6 + 2 + 1) * 4 / 2**20
    env = dict(os.environ, MINARI_DATASETS_PATH=str(args.dir / "minari"))
    child = Path(__file__).with_name("data_loading.py")
    print(f"{args.transitions} PointMaze steps, goal dict observations; raw float32 arrays {raw_mb:.1f} MB; "
          f"median of {args.reps} fresh processes")
    print(f"{'load':<8}{'episodes':>9}{'seconds':>9}{'/ 5 s':>7}{'peak MB':>9}{'x raw':>7}")
    for label, fresh in (("1st", True), ("cached", False)):
        runs = []
        for _ in range(args.reps):
            cache = tempfile.mkdtemp() if fresh else str(args.dir / "cache")
            out = subprocess.run([sys.executable, str(child), "--child", dataset_id], env=dict(env, ODT_CACHE=cache),
                                 capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        s, mb = statistics.median(r["seconds"] for r in runs), statistics.median(r["peak_mb"] for r in runs)
        print(f"{label:<8}{runs[0]['episodes']:>9}{s:>9.2f}{s / 5:>7.2f}{mb:>9.1f}{mb / raw_mb:>7.2f}")


if __name__ == "__main__":
    main()
