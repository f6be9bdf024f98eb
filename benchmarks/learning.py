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
    for seed in seeds:
        s = json.loads((args.out / f"seed-{seed}" / "summary.json").read_text())
        rows.append((seed, s["offline"].get("normalized_mean", s["offline"]["return_mean"]),
                     s["final"].get("normalized_mean", s["final"]["return_mean"]), s["online_steps"],
                     s["offline"]["return_mean"], s["final"]["return_mean"]))
    print(f"\n{'seed':>6}{'offline':>10}{'final':>10}{'delta':>10}{'online steps':>14}{'return off':>12}{'return fin':>12}")
    for seed, off, fin, steps, roff, rfin in rows:
        print(f"{seed:>6}{off:>10.1f}{fin:>10.1f}{fin - off:>+10.1f}{steps:>14}{roff:>12.1f}{rfin:>12.1f}")
    a = np.array([(r[1], r[2]) for r in rows])
    d = a[:, 1] - a[:, 0]
    print(f"{'mean':>6}{a[:, 0].mean():>10.1f}{a[:, 1].mean():>10.1f}{d.mean():>+10.1f}")
    print(f"{'std':>6}{a[:, 0].std():>10.1f}{a[:, 1].std():>10.1f}{d.std():>10.1f}")
    print(f"normalized score (D4RL reference returns), offline {a[:, 0].mean():.1f} +- {a[:, 0].std():.1f}, "
          f"final {a[:, 1].mean():.1f} +- {a[:, 1].std():.1f} over {len(rows)} seeds")


if __name__ == "__main__":
    main()
