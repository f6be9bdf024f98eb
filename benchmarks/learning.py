"""Does finetuning help? Pretrain and finetune for several seeds; print the offline and final
normalized scores per seed and as mean +- std; with --algos, per algorithm on the same seeds and
budget, and side by side.

    python benchmarks/learning.py --seeds 0,1,2 --out runs/learning -- --preset cpu-small \
        --dataset odt/hopper-medium --online-steps 50000
    python benchmarks/learning.py --algos odt,vidt --seeds 0,1 --out runs/vidt -- --preset cpu-small \
        --dataset odt/hopper-random --online-steps 10000

Everything after ``--`` is passed to ``odt run``. Seeds run one after another, or ``--parallel N``
at a time (then give each run ``--threads 1``); a seed whose summary.json already exists is read,
not rerun, so an interrupted benchmark resumes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path("runs/learning"))
    ap.add_argument("--parallel", type=int, default=1, help="seeds run at the same time")
    ap.add_argument("--algos", default="", help="comma-separated --algo values, each into OUT/ALGO")
    ap.add_argument("run_args", nargs=argparse.REMAINDER, help="flags for `odt run`, after --")
    args = ap.parse_args()
    run_args = [a for a in args.run_args if a != "--"] or ["--preset", "cpu-small", "--online-steps", "50000"]
    seeds = [int(s) for s in args.seeds.split(",")]
    if not args.algos:
        report(run_seeds(args.out, run_args, seeds, args.parallel))
        return
    results = {}
    for algo in args.algos.split(","):
        print(f"\n=== {algo}")
        results[algo] = run_seeds(args.out / algo, [*run_args, "--algo", algo], seeds, args.parallel)
        report(results[algo])
    print(f"\n{'algo':<10}{'offline':>16}{'final':>16}{'last 3':>16}  (mean +- std over seeds {args.seeds})")
    for algo, rows in results.items():
        a = np.array([r[1:4] for r in rows])
        print(f"{algo:<10}" + "".join(f"{f'{a[:, i].mean():.1f} +- {a[:, i].std():.1f}':>16}" for i in range(3)))


def run_seeds(out: Path, run_args: list[str], seeds: list[int], parallel: int) -> list[tuple]:
    """Run the seeds whose summary.json is missing; return (seed, offline, final, last 3, steps)."""
    pending = [s for s in seeds if not (out / f"seed-{s}" / "summary.json").is_file()]
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < parallel:
            seed = pending.pop(0)
            run = out / f"seed-{seed}"
            run.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "odt.cli", "run", *run_args, "--seed", str(seed), "--out", str(run),
                   "--overwrite"]
            print("$", " ".join(cmd), flush=True)
            running.append(subprocess.Popen(cmd, stdout=open(out / f"seed-{seed}.log", "w"),
                                            stderr=subprocess.STDOUT))
        running[0].wait()
        for p in [p for p in running if p.poll() is not None]:
            if p.returncode:
                raise SystemExit(f"a run failed (exit {p.returncode}): {' '.join(p.args)}")
            running.remove(p)
    rows = []
    for seed in seeds:
        run = out / f"seed-{seed}"
        s = json.loads((run / "summary.json").read_text())
        key = "normalized_mean" if "normalized_mean" in s["final"] else "return_mean"
        evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evals = [r[f"eval_{key}"] for r in evals if r.get("event") == "eval" and r["online_steps"] > 0]
        # One evaluation of a few episodes is noisy; the mean of the last three is steadier.
        rows.append((seed, s["offline"][key], s["final"][key], float(np.mean(evals[-3:])), s["online_steps"], key))
    return rows


def report(rows: list[tuple]) -> None:
    key = rows[0][-1]
    print(f"\n{key.replace('_mean', '')} per seed")
    print(f"{'seed':>6}{'offline':>10}{'final':>10}{'delta':>10}{'last 3':>10}{'delta':>10}{'online steps':>14}")
    for seed, off, fin, last3, steps, _ in rows:
        print(f"{seed:>6}{off:>10.1f}{fin:>10.1f}{fin - off:>+10.1f}{last3:>10.1f}{last3 - off:>+10.1f}{steps:>14}")
    a = np.array([r[1:4] for r in rows])
    for name, f, sign in (("mean", np.mean, "+"), ("std", np.std, "")):
        print(f"{name:>6}{f(a[:, 0]):>10.1f}{f(a[:, 1]):>10.1f}{f(a[:, 1] - a[:, 0]):>{sign}10.1f}"
              f"{f(a[:, 2]):>10.1f}{f(a[:, 2] - a[:, 0]):>{sign}10.1f}")
    print(f"{key} over {len(rows)} seeds: offline {a[:, 0].mean():.1f} +- {a[:, 0].std():.1f}, "
          f"final {a[:, 1].mean():.1f} +- {a[:, 1].std():.1f}, last three evaluations "
          f"{a[:, 2].mean():.1f} +- {a[:, 2].std():.1f}")


if __name__ == "__main__":
    main()
