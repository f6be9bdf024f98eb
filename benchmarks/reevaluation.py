"""The re-evaluations beside a grid's runs: every run's pretrained and final checkpoints evaluated on
other environment seeds than its own evaluations used, as

    odt eval --run RUN --checkpoint pretrained --episodes 50 --seed 123 --json > RUN/eval-pretrained-50.json
    odt eval --run RUN --checkpoint final --episodes 50 --seed 123 --json > RUN/eval-final-50.json

so that a gain that exists only in the metric's window of evaluations shows. Prints a markdown
table: per setting (labelled as `odt report` labels them), the normalized score of each checkpoint
and the change, mean over seeds with a 95% bootstrap interval, and each other setting's final
score minus that of ``--against``.

    python benchmarks/reevaluation.py RUNS_DIR [--against odt] [--reps 2000] [--seed 0] [--below SCORE]

With ``--below``, a last column counts the episodes (of the 50) that score under SCORE normalized,
pretrained -> final, mean over seeds: a mean that falls because a few episodes fail shows there.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from odt.report_stats import find_runs, label_settings
from odt.scores import normalized_score


def _interval(x: np.ndarray, reps: int, rng: np.random.Generator, y: np.ndarray | None = None,
              signed: bool = False) -> str:
    """The mean (or the difference of two independent means) with its 95% percentile bootstrap interval."""
    def stat(a, b):
        return a.mean() - (b.mean() if b is not None else 0.0)

    draws = [stat(rng.choice(x, len(x)), None if y is None else rng.choice(y, len(y))) for _ in range(reps)]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    f = "+.1f" if signed or y is not None else ".1f"
    return f"{stat(x, y):{f}} [{lo:{f}}, {hi:{f}}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--against", default="odt")
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--below", type=float, default=None)
    a = ap.parse_args()
    runs, _ = find_runs([a.runs])
    label_settings(runs)  # sets each run's label
    scores: dict[str, list[tuple[float, float]]] = {}
    under: dict[str, list[tuple[int, int]]] = {}
    for run in runs:
        label = run.setting
        files = [run.path / f"eval-{ck}-50.json" for ck in ("pretrained", "final")]
        if all(f.is_file() and f.stat().st_size for f in files):
            pre, fin = (json.loads(f.read_text()) for f in files)
            scores.setdefault(label, []).append((pre["normalized_mean"], fin["normalized_mean"]))
            if a.below is not None:
                under.setdefault(label, []).append(tuple(
                    sum(normalized_score(e["env"], r) < a.below for r in e["returns"]) for e in (pre, fin)))
    rng = np.random.default_rng(a.seed)
    extra = f" episodes under {a.below:g} |" if a.below is not None else ""
    print(f"| setting | runs | pretrained (50 episodes) | final (50 episodes) | change | final minus {a.against}'s |{extra}")
    print("| --- | --- | --- | --- | --- | --- |" + (" --- |" if extra else ""))
    base = np.array([f for _, f in scores.get(a.against, [])])
    for label in sorted(scores):
        pre, fin = (np.array(x) for x in zip(*scores[label]))
        versus = _interval(fin, a.reps, rng, base) if label != a.against and len(base) > 1 and len(fin) > 1 else "-"
        counts = ""
        if a.below is not None:
            before, after = np.mean(under[label], axis=0)
            counts = f" {before:.1f} -> {after:.1f} |"
        print(f"| {label} | {len(fin)} | {_interval(pre, a.reps, rng)} | {_interval(fin, a.reps, rng)} | "
              f"{_interval(fin - pre, a.reps, rng, signed=True)} | {versus} |{counts}")


if __name__ == "__main__":
    main()
