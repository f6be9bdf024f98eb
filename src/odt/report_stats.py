"""The numbers of ``odt report``: runs read from their directories, labelled by setting, and
summarised per task (environment and dataset) and setting (the algorithm and whatever else
differs between runs of a task; seeds are the replicates): mean and std of the offline and online
scores and their difference, as in the ODT paper's Table 5.1; across tasks and runs the
interquartile mean and optimality gap with 95% stratified bootstrap intervals (rliable, as the
ViDT paper reports them); learning curves with interval bands and performance profiles; per task,
how much one setting's online score exceeds another's, with a 95% interval and the probability of
improvement. No text is formatted here: report.py renders these numbers."""
from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Config, ConfigError

# Config keys that never make two runs different settings: replicates, paths, machine details.
SETTINGS_NOT_COMPARED = {"seed", "out", "overwrite", "progress", "resume", "extend", "init", "device", "threads", "download", "preset",
                         "wandb", "wandb_project", "wandb_mode", "capture_video"}
DEFAULTS = Config().to_dict()
GAMMA = 100.0  # optimality gap threshold: the expert's normalized score
CURVE_POINTS = 50
MAX_PAIRED = 4  # settings of a task beyond which every pair would bury the table: name one with --against


@dataclass
class RunRecord:
    path: Path
    config: dict
    summary: dict
    evals: list[dict]
    setting: str = ""
    online_evals: int = 3

    @property
    def task(self) -> tuple[str, str]:
        if self.config.get("tasks"):  # one multi-task model: --env and --dataset were ignored
            return "multi-task", " + ".join(self.config["tasks"])
        return self.config.get("env", "?"), self.config.get("dataset", "?")

    @property
    def normalized(self) -> bool:
        return all("normalized_mean" in s for s in (self.summary.get("offline"), self.summary.get("final")) if s)

    def score(self, phase: str, normalized: bool) -> float | None:
        """offline: the evaluation after pretraining; online: the mean of the last ``online_evals``
        evaluations made after finetuning began (the final one alone where there are no rows);
        delta: online - offline."""
        if phase == "delta":
            on, off = self.score("online", normalized), self.score("offline", normalized)
            return None if on is None or off is None else on - off
        key = "normalized_mean" if normalized else "return_mean"
        s = self.summary.get("offline" if phase == "offline" else "final")
        if not s:
            return None
        if phase == "online":
            rows = [r[f"eval_{key}"] for r in self.evals
                    if r.get("phase") == "online" and r.get("online_steps", 0) > 0 and f"eval_{key}" in r]
            if rows:
                return float(np.mean(rows[-self.online_evals:]))
        return float(s[key])

    def curve(self, normalized: bool) -> tuple[np.ndarray, np.ndarray]:
        """Evaluation score against online steps; at 0 steps the last evaluation (after pretraining)."""
        points = {}
        key = "eval_normalized_mean" if normalized else "eval_return_mean"
        for row in self.evals:
            if row.get(key) is not None:
                points[row.get("online_steps", 0)] = row[key]
        xs = np.array(sorted(points), dtype=float)
        return xs, np.array([points[x] for x in sorted(points)], dtype=float)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: JSON's, and bytes that are not UTF-8
        raise ConfigError(f"cannot read {path}: {e}; is it a run directory made by odt? leave that run out") from e
    if not isinstance(value, dict):
        raise ConfigError(f"{path} holds {json.dumps(value)[:40]}, not the JSON object odt writes; is it a run "
                          "directory made by odt? leave that run out")
    return value


def _summary(path: Path) -> dict:
    """summary.json, whose evaluations (where it has them) hold the numbers the report reads."""
    summary = _read_json(path)
    for phase in ("offline", "final"):
        s = summary.get(phase)
        if s is None:
            continue
        numbers = [s.get("return_mean"), s.get("normalized_mean", 0.0)] if isinstance(s, dict) else [None]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers):
            raise ConfigError(f"{path}: its {phase!r} entry is not an evaluation odt wrote; leave that run out")
    return summary


def find_runs(paths: list[Path]) -> tuple[list[RunRecord], list[Path]]:
    """Complete runs (config.json and summary.json) at or under the paths, and incomplete ones."""
    dirs = set()
    for p in paths:
        if not p.is_dir():
            raise ConfigError(f"{p} is not a directory; give run directories or the --out of an odt sweep")
        configs = [p / "config.json"] if (p / "config.json").is_file() else p.rglob("config.json")
        dirs.update(c.parent for c in configs)
    runs, incomplete = [], []
    for d in sorted(dirs):
        if not (d / "summary.json").is_file():
            incomplete.append(d)
            continue
        try:
            rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            rows = []  # no learning curve, the summary still counts
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read {d / 'metrics.jsonl'}: {e}; leave that run out") from e
        if not all(isinstance(r, dict) for r in rows):
            raise ConfigError(f"{d / 'metrics.jsonl'} has a row that is not a JSON object; leave that run out")
        # A setting added since a run was made has its default there: runs of older versions compare.
        config = {**DEFAULTS, **_read_json(d / "config.json")}
        if config.get("action_head") == "auto":
            # `odt finetune --init` records the head it took from the checkpoint, `odt run` records
            # auto: the same head must label one setting.
            config["action_head"] = Config(algo=config.get("algo", "odt")).resolved_action_head()
        runs.append(RunRecord(d, config, _summary(d / "summary.json"), [r for r in rows if r.get("event") == "eval"]))
    if not runs:
        where = ", ".join(map(str, paths))
        found = f"{len(incomplete)} incomplete run(s) (no summary.json) but no complete one" if incomplete \
            else "no run directory (config.json)"
        raise ConfigError(f"{found} under {where}; give the --out of finished `odt run`s or an `odt sweep`")
    return runs, incomplete


def label_settings(runs: list[RunRecord]) -> list[str]:
    """Each run's setting: its algorithm plus the config keys that vary between runs of one task
    and algorithm, in any task (one label per setting across tasks, which the aggregates need).
    Keys are compared within an algorithm: a baseline's network and a transformer's differ by
    nature and would only clutter the labels. Returns every such key."""
    groups = defaultdict(list)
    for r in runs:
        groups[r.task, r.config.get("algo")].append(r)
    keys_of = defaultdict(set)  # algorithm -> its varying keys
    for (_, algo), group in groups.items():
        keys_of[algo].update(k for k in set().union(*(r.config for r in group)) - SETTINGS_NOT_COMPARED - {"algo"}
                             if len({json.dumps(r.config.get(k)) for r in group}) > 1)
    for r in runs:
        keys = sorted(keys_of[r.config.get("algo")])
        r.setting = " ".join([str(r.config.get("algo", "?"))] + [f"{k}={r.config.get(k)}" for k in keys])
    return sorted(set().union(*keys_of.values()))


def _mean_std(values: list[float]) -> tuple[float, float]:
    return (float(np.mean(values)), float(np.std(values))) if values else (math.nan, math.nan)


def _bootstrap(scores: np.ndarray | tuple[np.ndarray, ...], func, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """func's point estimate and 95% interval over resamples of a (runs x tasks) matrix, or of a
    tuple of them, each resampled independently (rliable's StratifiedIndependentBootstrap)."""
    from rliable import library as rly

    # rliable's bootstraps draw from numpy's global generator; seeding it each call keeps every
    # interval reproducible.
    np.random.seed(seed)
    point, ci = rly.get_interval_estimates({"x": scores}, func, reps=reps)
    return point["x"], ci["x"]


def _matrix(runs: list[RunRecord], tasks: list[tuple], phase: str, normalized: bool) -> tuple[np.ndarray, int]:
    """(runs x tasks) scores for rliable, which needs as many runs on every task: the first k by
    seed, k the smallest count; returns the matrix and how many runs were left out."""
    columns = []
    for t in tasks:
        scores = [s for r in sorted(runs, key=lambda r: r.config.get("seed", 0)) if r.task == t
                  for s in [r.score(phase, normalized)] if s is not None]
        columns.append(scores)
    k = min(len(c) for c in columns)
    return np.array([c[:k] for c in columns]).T, sum(len(c) - k for c in columns)


def aggregates(runs: list[RunRecord], reps: int, seed: int) -> tuple[list[dict], list[tuple], bool]:
    """IQM, optimality gap and mean across runs x tasks with 95% stratified bootstrap intervals,
    per setting and phase; over the tasks with normalized scores, or over all if none has them."""
    from rliable import metrics

    normalized = any(r.normalized for r in runs)
    tasks = sorted({r.task for r in runs if r.normalized == normalized})
    out = []
    for setting in sorted({r.setting for r in runs}):
        mine = [r for r in runs if r.setting == setting and r.task in tasks]
        for phase in ("offline", "online", "delta"):
            have = [t for t in tasks if any(r.task == t and r.score(phase, normalized) is not None for r in mine)]
            if not have:
                continue
            m, left_out = _matrix(mine, have, phase, normalized)
            gap = normalized and phase != "delta"  # a shortfall below 100 means nothing for a change

            def func(x):
                values = [metrics.aggregate_iqm(x), metrics.aggregate_mean(x)]
                return np.array(values + ([metrics.aggregate_optimality_gap(x, GAMMA)] if gap else []))

            point, ci = _bootstrap(m, func, reps, seed)
            row = {"setting": setting, "phase": phase, "runs_per_task": m.shape[0], "tasks": m.shape[1],
                   "runs_left_out": left_out, "iqm": point[0], "iqm_ci": ci[:, 0].tolist(),
                   "mean": point[1], "mean_ci": ci[:, 1].tolist()}
            if gap:
                row.update(optimality_gap=point[2], optimality_gap_ci=ci[:, 2].tolist())
            out.append({k: float(v) if isinstance(v, np.floating) else v for k, v in row.items()})
    return out, tasks, normalized


@dataclass(frozen=True)
class Uncompared:
    """A task whose settings were not compared, and why: it has no online score of the --against
    setting (``missing``), or without --against more settings than MAX_PAIRED (``settings``)."""
    task: tuple[str, str]
    missing: str | None = None
    settings: int = 0


def _online_scores(runs: list[RunRecord], norm: bool) -> dict[str, np.ndarray]:
    """setting -> (seeds x 1) online scores: rliable takes a (runs x tasks) matrix."""
    scores = {}
    for setting in sorted({r.setting for r in runs}):
        online = [[x] for r in runs if r.setting == setting for x in [r.score("online", norm)] if x is not None]
        if online:
            scores[setting] = np.array(online)
    return scores


def _pairs(task: tuple, scores: dict[str, np.ndarray], against: str | None) -> tuple[list[tuple], Uncompared | None]:
    if against is not None:
        pairs = [(s, against) for s in scores if s != against] if against in scores else []
        return pairs, Uncompared(task, missing=against) if against not in scores and len(scores) > 1 else None
    if len(scores) > MAX_PAIRED:
        return [], Uncompared(task, settings=len(scores))
    return list(itertools.combinations(scores, 2)), None


def differences(runs: list[RunRecord], against: str | None, reps: int,
                seed: int) -> tuple[list[dict], list[Uncompared]]:
    """Per task, one setting's online score minus another's: the difference of their means over
    seeds, its 95% interval with each setting's seeds resampled independently (seeds of different
    settings are not paired: rliable's StratifiedIndependentBootstrap), and the probability of
    improvement P(X > Y) (rliable's Mann-Whitney estimate, as the ViDT paper reports it). Without
    --against, each pair is ordered so that the difference is positive. Returns the rows and the
    tasks left out."""
    from rliable import metrics

    def func(x, y):
        return np.array([x.mean() - y.mean(), metrics.probability_of_improvement(x, y)])

    rows, left_out = [], []
    for task in sorted({r.task for r in runs}):
        mine = [r for r in runs if r.task == task]
        norm = all(r.normalized for r in mine)
        scores = _online_scores(mine, norm)
        pairs, uncompared = _pairs(task, scores, against)
        left_out += [uncompared] if uncompared else []
        for a, b in pairs:
            if against is None and scores[b].mean() > scores[a].mean():
                a, b = b, a
            if min(len(scores[a]), len(scores[b])) < 2:  # one seed resamples to itself: a point, not an interval
                point, ci = func(scores[a], scores[b]), np.full((2, 2), np.nan)
            else:
                point, ci = _bootstrap((scores[a], scores[b]), func, reps, seed)
            rows.append({"env": task[0], "dataset": task[1], "setting": a, "minus": b,
                         "unit": "normalized" if norm else "return", "runs": len(scores[a]),
                         "runs_minus": len(scores[b]), "online_difference": float(point[0]),
                         "online_difference_ci": ci[:, 0].tolist(),
                         "probability_of_improvement": float(point[1]),
                         "probability_of_improvement_ci": ci[:, 1].tolist()})
    return rows, left_out


def task_table(runs: list[RunRecord]) -> list[dict]:
    """Per task and setting: offline and online mean and std over seeds, and the change (Table 5.1)."""
    rows = []
    for task in sorted({r.task for r in runs}):
        for setting in sorted({r.setting for r in runs if r.task == task}):
            mine = [r for r in runs if r.task == task and r.setting == setting]
            norm = all(r.normalized for r in mine)
            off = [s for r in mine for s in [r.score("offline", norm)] if s is not None]
            on = [s for r in mine for s in [r.score("online", norm)] if s is not None]
            delta = [s for r in mine for s in [r.score("delta", norm)] if s is not None]
            (om, os_), (nm, ns), (dm, ds) = _mean_std(off), _mean_std(on), _mean_std(delta)
            rows.append({"env": task[0], "dataset": task[1], "setting": setting,
                         "unit": "normalized" if norm else "return", "runs": len(mine),
                         "seeds": sorted(r.config.get("seed") for r in mine), "offline_mean": om, "offline_std": os_,
                         "online_mean": nm, "online_std": ns, "delta_mean": dm, "delta_std": ds})
    return rows


def curves(runs: list[RunRecord], tasks: list[tuple], normalized: bool, reps: int, seed: int) -> list[dict]:
    """Learning curves on a common grid of online steps (each run interpolated onto it, up to the
    shortest run), with 95% bootstrap bands: per task the mean over seeds, and across the
    aggregated tasks the IQM over runs x tasks."""
    import scipy.stats

    def iqm(s):  # rliable's aggregate_iqm at every grid point at once
        return scipy.stats.trim_mean(s.reshape(-1, s.shape[-1]), 0.25, axis=0)

    out = []
    groups = defaultdict(list)
    for r in runs:
        xs, _ = r.curve(r.normalized)
        if len(xs) >= 2 and xs[-1] > 0:
            groups[(r.task, r.setting)].append(r)
    for (task, setting), mine in sorted(groups.items()):
        norm = all(r.normalized for r in mine)
        grid = np.linspace(0, min(r.curve(norm)[0][-1] for r in mine), CURVE_POINTS)
        ys = np.array([np.interp(grid, *r.curve(norm)) for r in mine])
        point, ci = _bootstrap(ys[:, None, :], lambda s: s.mean(axis=(0, 1)), reps, seed)
        out.append({"task": list(task), "setting": setting, "unit": "normalized" if norm else "return",
                    "runs": len(mine), "online_steps": grid.tolist(), "mean": point.tolist(),
                    "ci_low": ci[0].tolist(), "ci_high": ci[1].tolist()})
    for setting in sorted({s for _, s in groups}):
        mine = {t: groups[(t, setting)] for t in tasks if groups.get((t, setting))}
        if len(mine) < 2:
            continue  # one task: the per-task panel already shows it
        grid = np.linspace(0, min(r.curve(normalized)[0][-1] for g in mine.values() for r in g), CURVE_POINTS)
        k = min(len(g) for g in mine.values())
        ys = np.stack([np.array([np.interp(grid, *r.curve(normalized)) for r in g[:k]]) for g in mine.values()], 1)
        point, ci = _bootstrap(ys, iqm, reps, seed)
        out.append({"task": None, "setting": setting, "unit": "normalized" if normalized else "return",
                    "runs": k * len(mine), "online_steps": grid.tolist(), "iqm": point.tolist(),
                    "ci_low": ci[0].tolist(), "ci_high": ci[1].tolist()})
    return out


@dataclass
class Profiles:
    """Performance profiles: per "setting phase", the fraction of runs scoring above each tau, and
    its 95% interval (low and high rows)."""
    taus: np.ndarray
    profiles: dict[str, np.ndarray]
    cis: dict[str, np.ndarray]


def performance_profiles(runs: list[RunRecord], tasks: list[tuple], normalized: bool, reps: int, seed: int) -> Profiles:
    """rliable's performance profiles of the offline and the online scores of each setting, over
    the aggregated tasks; tau reaches the expert's score where scores are normalized."""
    from rliable import library as rly

    scores = {}
    for setting in sorted({r.setting for r in runs}):
        mine = [r for r in runs if r.setting == setting and r.task in tasks]
        for phase in ("offline", "online"):
            have = [t for t in tasks if any(r.task == t and r.score(phase, normalized) is not None for r in mine)]
            if have:
                scores[f"{setting} {phase}"] = _matrix(mine, have, phase, normalized)[0]
    every = np.concatenate([m.ravel() for m in scores.values()])
    top = max(every.max(), GAMMA if normalized else every.max())
    taus = np.linspace(min(0.0, every.min()), top * 1.05 if top > 0 else 1.0, 101)
    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global generator
    profiles, cis = rly.create_performance_profile(scores, taus, reps=reps)
    return Profiles(taus, profiles, cis)


@dataclass
class Summary:
    """Everything report.md, the CSVs and report.json show but the performance profiles: the
    command computes those after plotting the learning curves, so that learning_curves.png is
    written even where no run has a score to profile."""
    runs: list[RunRecord]
    incomplete: list[Path]
    setting_keys: list[str]
    table: list[dict]
    aggregates: list[dict]
    tasks: list[tuple]  # the aggregated tasks
    normalized: bool  # whether the aggregates are over normalized scores
    curves: list[dict]
    differences: list[dict]
    uncompared: list[Uncompared]
    reps: int
    seed: int
    online_evals: int


def summarise(runs: list[RunRecord], incomplete: list[Path], setting_keys: list[str], *, reps: int, seed: int,
              online_evals: int, against: str | None) -> Summary:
    """The runs' numbers; the runs carry their settings (label_settings) and online_evals."""
    table = task_table(runs)
    aggs, tasks, normalized = aggregates(runs, reps, seed)
    curve_rows = curves(runs, tasks, normalized, reps, seed)
    diffs, uncompared = differences(runs, against, reps, seed)
    return Summary(runs, incomplete, setting_keys, table, aggs, tasks, normalized, curve_rows, diffs, uncompared,
                   reps, seed, online_evals)
