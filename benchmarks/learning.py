"""Does finetuning help? Pretrain and finetune for several seeds; print the offline and final
normalized scores per seed and as mean +- std.

    python benchmarks/learning.py --seeds 0,1,2 --out runs/learning -- --preset cpu-small \
        --dataset odt/hopper-medium --online-steps 50000

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
    ap.add_argument("run_args", nargs=argparse.REMAINDER, help="flags for `odt run`, after --")
    args = ap.parse_args()
    run_args = [a for a in args.run_args if a != "--"] or ["--preset", "cpu-small", "--online-steps", "50000"]
    seeds = [int(s) for s in args.seeds.split(",")]
    pending = [s for s in seeds if not (args.out / f"seed-{s}" / "summary.json").is_file()]
    running: list[subprocess.Popen] = []
    while pending or running:
        while pending and len(running) < args.parallel:
            seed = pending.pop(0)
            out = args.out / f"seed-{seed}"
            out.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "odt.cli", "run", *run_args, "--seed", str(seed), "--out", str(out),
                   "--overwrite"]
            print("$", " ".join(cmd), flush=True)
            running.append(subprocess.Popen(cmd, stdout=open(out.parent / f"seed-{seed}.log", "w"),
                                            stderr=subprocess.STDOUT))
        running[0].wait()
        for p in [p for p in running if p.poll() is not None]:
            if p.returncode:
                raise SystemExit(f"a run failed (exit {p.returncode}): {' '.join(p.args)}")
            running.remove(p)
    rows = []
    key = "normalized_mean"
    for seed in seeds:
        run = args.out / f"seed-{seed}"
        s = json.loads((run / "summary.json").read_text())
        if key not in s["final"]:
            key = "return_mean"
        evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        evals = [r[f"eval_{key}"] for r in evals if r.get("event") == "eval" and r["online_steps"] > 0]
        # One evaluation of a few episodes is noisy; the mean of the last three is steadier.
        rows.append((seed, s["offline"][key], s["final"][key], float(np.mean(evals[-3:])), s["online_steps"]))
    print(f"\n{key.replace('_mean', '')} per seed")
    print(f"{'seed':>6}{'offline':>10}{'final':>10}{'delta':>10}{'last 3':>10}{'delta':>10}{'online steps':>14}")
    for seed, off, fin, last3, steps in rows:
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
