"""Time and memory of loading a 1M-transition dataset in each format odt reads.

    python benchmarks/data_loading.py [--transitions 1000000] [--reps 3] [--dir DIR]

Builds Hopper-shaped data (observation 11, action 3; episode lengths drawn like D4RL's
hopper-medium, mean about 450) once into DIR with the real h5py and minari libraries: a D4RL-format
HDF5 file (float32, with next_observations), odt's .npz and a Minari dataset. Each load then runs
in a fresh process, which reports the seconds `odt.load_dataset` took and the growth of its peak
resident memory over the process after imports (Linux: /proc/self/status). A Minari dataset is
flattened into odt's cache on its first load: "minari 1st" is that load, "minari" the later ones.
Targets: <= 5 s and <= 2x the raw float32 arrays (observations + actions + rewards).
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

OBS, ACT = 11, 3
TARGET_S, TARGET_MEM = 5.0, 2.0


def _flat(n: int, mean_length: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    lengths, total = [], 0
    while total < n:
        lengths.append(int(np.clip(rng.normal(mean_length, mean_length / 3), 2, 1000)))
        total += lengths[-1]
    lengths[-1] -= sum(lengths) - n
    ends = np.cumsum(lengths) - 1
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[ends[:-1]] = True  # the last episode is cut by the end of the data
    obs = rng.normal(size=(n + 1, OBS)).astype(np.float32)
    return dict(observations=obs[:-1], next_observations=obs[1:], actions=rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
                rewards=rng.normal(3, 1, n).astype(np.float32), terminals=terminals, timeouts=timeouts)


def build(directory: Path, n: int, mean_length: int) -> dict[str, str]:
    import h5py
    import minari

    from odt.data.formats import from_arrays, save_npz
    from odt.data.minari import write_minari
    from odt.data.trajectories import episode_ends

    directory.mkdir(parents=True, exist_ok=True)
    os.environ["MINARI_DATASETS_PATH"] = str(directory / "minari")
    stem = f"hopper-{n}-len{mean_length}"
    sources = {"hdf5": str(directory / f"{stem}.hdf5"), "npz": str(directory / f"{stem}.npz"),
               "minari": f"bench/hopper/n{n}-len{mean_length}-v0"}
    a = _flat(n, mean_length)
    if not Path(sources["hdf5"]).is_file():
        with h5py.File(sources["hdf5"] + ".tmp", "w") as f:
            for k, v in a.items():
                f[k] = v
        os.replace(sources["hdf5"] + ".tmp", sources["hdf5"])
    final = a["next_observations"][episode_ends(a["terminals"], a["timeouts"])]
    ds = from_arrays(dict(a, final_observations=final, metadata={"env_id": "Hopper-v5"}), "bench")
    if not Path(sources["npz"]).is_file():
        save_npz(ds, Path(sources["npz"]))
    if sources["minari"] not in minari.list_local_datasets():
        write_minari(ds, sources["minari"], "Hopper-v5", "synthetic", "odt loading benchmark", {})
    return sources


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _child(source: str) -> None:
    import time

    import h5py  # noqa: F401 - imports are not part of the measured load
    import minari  # noqa: F401

    from odt.data.sources import load_dataset

    # Reset the peak-RSS mark (Linux) so that imports do not hide the load's own peak.
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    t = time.perf_counter()
    ds = load_dataset(source)
    seconds = time.perf_counter() - t
    peak = _status_kb("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_mb": (peak - base) / 1024, "n": ds.n_transitions,
                      "episodes": len(ds.episodes)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transitions", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--episode-lengths", type=int, nargs="+", default=[450, 22],
                   help="mean episode lengths to try (450: like hopper-medium, 22: like hopper-random)")
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "odt-bench-data")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args.child)
    raw_mb = args.transitions * (OBS + ACT + 1) * 4 / 2**20
    print(f"{args.transitions} transitions; raw float32 arrays {raw_mb:.1f} MB; median of {args.reps} fresh processes")
    print(f"{'format':<11}{'episodes':>9}{'seconds':>9}{'/ 5 s':>7}{'peak MB':>9}{'x raw':>7}")
    env = dict(os.environ, MINARI_DATASETS_PATH=str(args.dir / "minari"))
    for mean_length in args.episode_lengths:
        sources = build(args.dir, args.transitions, mean_length)
        # Minari loads are flattened into odt's cache once: time the first load and the later ones.
        sources["minari 1st"] = sources["minari"]
        for fmt, source in sources.items():
            caches = [tempfile.mkdtemp() for _ in range(args.reps)] if fmt == "minari 1st" else [args.dir / "cache"] * args.reps
            runs = [json.loads(subprocess.run([sys.executable, __file__, "--child", source], check=True,
                                              env=dict(env, ODT_CACHE=str(cache)), capture_output=True,
                                              text=True).stdout) for cache in caches]
            s = statistics.median(r["seconds"] for r in runs)
            m = statistics.median(r["peak_mb"] for r in runs)
            print(f"{fmt:<11}{runs[0]['episodes']:>9}{s:>9.2f}{s / TARGET_S:>7.2f}{m:>9.1f}{m / raw_mb:>7.2f}")


if __name__ == "__main__":
    main()
