"""``odt report``: many runs summarised as the field reports them. Per task (environment and
dataset) and setting (the algorithm and whatever else differs between runs of a task; seeds are
the replicates): mean and std of the offline and online scores and their difference, as in the
ODT paper's Table 5.1; across tasks and runs the interquartile mean and optimality gap with 95%
stratified bootstrap intervals (rliable, as the ViDT paper reports them); learning curves with
interval bands and performance profiles; per task, how much one setting's online score exceeds
another's, with a 95% interval and the probability of improvement."""
from __future__ import annotations

import csv
import itertools
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from .config import Config, ConfigError, check_out_dir

# Config keys that never make two runs different settings: replicates, paths, machine details.
SETTINGS_NOT_COMPARED = {"seed", "out", "overwrite", "progress", "resume", "extend", "init", "device", "threads", "download", "preset",
                         "wandb", "wandb_project", "wandb_mode", "capture_video"}
DEFAULTS = Config().to_dict()
GAMMA = 100.0  # optimality gap threshold: the expert's normalized score
CURVE_POINTS = 50
MAX_PAIRED = 4  # settings of a task beyond which every pair would bury the table: name one with --against


@dataclass
class ReportArgs:
    runs: tyro.conf.Positional[list[Path]]
    """RunRecord directories, or directories to search for them (the --out of an `odt sweep`)."""
    out: Path
    """Report directory: report.md, table.csv, aggregates.csv, report.json and the PNG plots."""
    overwrite: bool = False
    """Allow writing into an existing, non-empty --out."""
    reps: int = 2000
    """Bootstrap resamples for every 95% confidence interval."""
    seed: int = 0
    """Seed of the bootstrap resampling."""
    online_evals: int = 3
    """The online score of a run: the mean of its last this many online evaluations (1: the final
    evaluation alone). One snapshot of a policy finetuned at a high learning rate says little."""
    against: str | None = None
    """A setting (as the report labels it, e.g. "odt") to compare every other setting of a task
    with; without it, every pair of settings on tasks with at most 4."""


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


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}; is it a run directory made by odt?") from e


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
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read {d / 'metrics.jsonl'}: {e}; leave that run out") from e
        # A setting added since a run was made has its default there: runs of older versions compare.
        config = {**DEFAULTS, **_read_json(d / "config.json")}
        if config.get("action_head") == "auto":
            # `odt finetune --init` records the head it took from the checkpoint, `odt run` records
            # auto: the same head must label one setting.
            config["action_head"] = Config(algo=config.get("algo", "odt")).resolved_action_head()
        runs.append(RunRecord(d, config, _read_json(d / "summary.json"), [r for r in rows if r.get("event") == "eval"]))
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


def differences(runs: list[RunRecord], against: str | None, reps: int, seed: int) -> tuple[list[dict], list[str]]:
    """Per task, one setting's online score minus another's: the difference of their means over
    seeds, its 95% interval with each setting's seeds resampled independently (seeds of different
    settings are not paired: rliable's StratifiedIndependentBootstrap), and the probability of
    improvement P(X > Y) (rliable's Mann-Whitney estimate, as the ViDT paper reports it). Without
    --against, each pair is ordered so that the difference is positive. Returns the rows and a
    line for each task left out, saying why."""
    from rliable import metrics

    def func(x, y):
        return np.array([x.mean() - y.mean(), metrics.probability_of_improvement(x, y)])

    rows, notes = [], []
    for task in sorted({r.task for r in runs}):
        mine = [r for r in runs if r.task == task]
        norm = all(r.normalized for r in mine)
        scores = {}  # setting -> (seeds x 1) online scores, as rliable takes them
        for setting in sorted({r.setting for r in mine}):
            online = [[x] for r in mine if r.setting == setting for x in [r.score("online", norm)] if x is not None]
            if online:
                scores[setting] = np.array(online)
        if against is not None:
            pairs = [(s, against) for s in scores if s != against] if against in scores else []
            if against not in scores and len(scores) > 1:
                notes.append(f"{_task_name(task)}: no online score of {against}")
        else:
            pairs = list(itertools.combinations(scores, 2)) if len(scores) <= MAX_PAIRED else []
            if len(scores) > MAX_PAIRED:
                notes.append(f"{_task_name(task)}: {len(scores)} settings; `--against SETTING` compares each with one")
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
    return rows, notes


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


def _task_name(task) -> str:
    return f"{task[1]} ({task[0]})"


def plot_curves(curve_rows: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    panels = defaultdict(list)
    for c in curve_rows:
        panels[_task_name(c["task"]) if c["task"] else "IQM over tasks and runs"].append(c)
    settings = sorted({c["setting"] for c in curve_rows})
    # More settings than tab10 has colors (an arms report) take tab20's, and one legend under the
    # panels, so that no two settings share a look and no legend hides a curve.
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))  # tab20's ten dark colors, then their light pairs
    colors = {s: plt.get_cmap("tab10")(i) if len(settings) <= 10 else plt.get_cmap("tab20")(order[i % 20])
              for i, s in enumerate(settings)}
    n = max(len(panels), 1)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    legend_h = 0.16 * len(settings) + 0.1
    fig, axes = plt.subplots(rows, cols, figsize=(max(5 * cols, 7), 3.6 * rows + 0.4 + legend_h), squeeze=False)
    for ax, (title, cs) in zip(axes.flat, panels.items()):
        for c in cs:
            y = c.get("mean", c.get("iqm"))
            color = colors[c["setting"]]
            ax.plot(c["online_steps"], y, color=color, label=f"{c['setting']} ({c['runs']} runs)")
            ax.fill_between(c["online_steps"], c["ci_low"], c["ci_high"], color=color, alpha=0.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("online samples (environment steps)")
        ax.set_ylabel("normalized score" if cs[0]["unit"] == "normalized" else "return (no normalized reference)")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if not panels:
        axes.flat[0].text(0.5, 0.5, "no online evaluations to plot", ha="center", va="center")
    labels = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(lab, h)
    if labels:
        fig.legend(list(labels.values()), list(labels), loc="lower center", fontsize=7, frameon=False)
    fig.suptitle("evaluations during finetuning: mean over seeds (IQM over tasks x runs), 95% bootstrap band",
                 fontsize=9)
    fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_profiles(runs: list[RunRecord], tasks: list[tuple], normalized: bool, reps: int, seed: int, path: Path) -> dict:
    """Performance profiles (the fraction of runs above each score, rliable) of the offline and the
    online scores of each setting, over the aggregated tasks."""
    import matplotlib.pyplot as plt
    from rliable import library as rly, plot_utils

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
    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=cis, ax=ax,
                                         xlabel="normalized score (tau)" if normalized
                                         else "return (tau; no normalized reference)",
                                         ylabel="fraction of runs with score > tau")
    ax.legend(fontsize=8)
    ax.set_title(f"performance profile over {len(tasks)} task(s), 95% bootstrap bands", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"tau": taus.tolist(), **{k: {"profile": v.tolist(), "ci_low": cis[k][0].tolist(),
                                         "ci_high": cis[k][1].tolist()} for k, v in profiles.items()}}


def _f(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"  # small raw returns (toys) keep their digits


def _pm(mean: float, std: float) -> str:
    return "-" if math.isnan(mean) else f"{_f(mean)} +- {_f(std)}"


def _ci(row: dict, key: str) -> str:
    lo, hi = row[f"{key}_ci"]
    return f"{_f(row[key])} [{_f(lo)}, {_f(hi)}]"


def markdown(table: list[dict], aggs: list[dict], tasks: list[tuple], normalized: bool, runs: list[RunRecord],
             incomplete: list[Path], setting_keys: list[str], reps: int, online_evals: int,
             diffs: list[dict], diff_notes: list[str]) -> str:
    lines = ["# odt report", "",
             f"{len(runs)} complete runs on {len({r.task for r in runs})} task(s)"
             + (f"; {len(incomplete)} incomplete run(s) left out (no summary.json): "
                + ", ".join(str(p) for p in incomplete) if incomplete else "") + ".",
             ("One setting" if len({r.setting for r in runs}) == 1 else
              "Settings are labelled by the algorithm" + (f" and the keys that vary: {', '.join(setting_keys)}"
                                                          if setting_keys else ""))
             + "; seeds are the replicates.",
             "", "## Offline and online scores per task (Table 5.1 of the ODT paper)", "",
             f"Mean +- std over seeds; offline: the evaluation after pretraining; online: the mean of the last "
             f"{online_evals} evaluation(s) of finetuning; delta: online - offline, per run.",
             "", "| task | setting | unit | runs | offline | online | delta |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in table:
        lines.append(f"| {_task_name((r['env'], r['dataset']))} | {r['setting']} | {r['unit']} | {r['runs']} | "
                     f"{_pm(r['offline_mean'], r['offline_std'])} | {_pm(r['online_mean'], r['online_std'])} | "
                     f"{_pm(r['delta_mean'], r['delta_std'])} |")
    if diffs or diff_notes:
        lines += ["", "## Differences between settings (online)", "",
                  f"Per task: the setting's online score minus the other's (difference of the means over seeds "
                  f"[95% bootstrap interval, each setting's seeds resampled independently, {reps} resamples]) "
                  f"and the probability of improvement P(setting > other) [95% interval] (rliable). A setting "
                  f"with one seed gives no interval.", ""]
        if diffs:
            lines += ["| task | setting | minus | unit | runs | online difference | P(improvement) |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for d in diffs:
                poi_lo, poi_hi = d["probability_of_improvement_ci"]
                one = math.isnan(poi_lo)
                lines.append(f"| {_task_name((d['env'], d['dataset']))} | {d['setting']} | {d['minus']} | {d['unit']} | "
                             f"{d['runs']} vs {d['runs_minus']} | "
                             + (f"{_f(d['online_difference'])} | {d['probability_of_improvement']:.2f} |" if one else
                                f"{_ci(d, 'online_difference')} | "
                                f"{d['probability_of_improvement']:.2f} [{poi_lo:.2f}, {poi_hi:.2f}] |"))
        lines += [""] * bool(diff_notes) + [f"Not compared: {n}." for n in diff_notes]
    if any(r["unit"] == "return" for r in table):
        lines += ["", "Tasks in raw return have no normalized reference (D4RL's random and expert returns, or a "
                  "dataset's ref_min_score / ref_max_score)."]
    unit = "normalized scores" if normalized else "raw returns (no task has a normalized reference)"
    lines += ["", "## Aggregates across runs and tasks", "",
              f"Over {len(tasks)} task(s) in {unit}: {', '.join(_task_name(t) for t in tasks)}. Point estimate "
              f"[95% stratified bootstrap interval, {reps} resamples] (rliable)."
              + (f" Optimality gap: mean shortfall below {GAMMA:g}." if normalized else "")
              + " The delta rows aggregate each run's online - offline.", "",
              "| setting | phase | runs x tasks | IQM | mean |" + (" optimality gap |" if normalized else ""),
              "| --- | --- | --- | --- | --- |" + (" --- |" if normalized else "")]
    for a in aggs:
        lines.append(f"| {a['setting']} | {a['phase']} | {a['runs_per_task']} x {a['tasks']} | {_ci(a, 'iqm')} | "
                     f"{_ci(a, 'mean')} |" + ((f" {_ci(a, 'optimality_gap')} |" if "optimality_gap" in a else " - |")
                                             if normalized else ""))
    if any(a["runs_left_out"] for a in aggs):
        lines += ["", "rliable needs as many runs on every task: where tasks had more, the extra runs (highest "
                  "seeds) are left out of the aggregates (`runs_left_out` in report.json)."]
    lines += ["", "## Plots", "", "![learning curves](learning_curves.png)", "",
              "![performance profile](performance_profile.png)", ""]
    return "\n".join(lines)


def report_command(a: ReportArgs) -> int:
    if a.reps <= 0:
        raise ConfigError(f"--reps must be positive, got {a.reps}")
    if a.online_evals <= 0:
        raise ConfigError(f"--online-evals must be positive, got {a.online_evals}")
    check_out_dir(a.out, a.overwrite, "report")
    if not a.runs:
        raise ConfigError("give run directories or the --out of an odt sweep: odt report DIR [DIR ...] --out REPORT")
    runs, incomplete = find_runs(a.runs)
    for r in runs:
        r.online_evals = a.online_evals
    setting_keys = label_settings(runs)
    if a.against is not None and a.against not in {r.setting for r in runs}:
        raise ConfigError(f"--against {a.against!r} is no setting of these runs; they are: "
                          + ", ".join(repr(s) for s in sorted({r.setting for r in runs})))
    import matplotlib

    matplotlib.use("Agg")
    table = task_table(runs)
    aggs, tasks, normalized = aggregates(runs, a.reps, a.seed)
    curve_rows = curves(runs, tasks, normalized, a.reps, a.seed)
    diffs, diff_notes = differences(runs, a.against, a.reps, a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    plot_curves(curve_rows, a.out / "learning_curves.png")
    profiles = plot_profiles(runs, tasks, normalized, a.reps, a.seed, a.out / "performance_profile.png")
    text = markdown(table, aggs, tasks, normalized, runs, incomplete, setting_keys, a.reps, a.online_evals,
                    diffs, diff_notes)
    (a.out / "report.md").write_text(text)
    _write_csv(a.out / "table.csv", [_finite({k: v for k, v in r.items() if k != "seeds"}) for r in table])
    _write_csv(a.out / "aggregates.csv", [{k: (" ".join(map(str, v)) if isinstance(v, list) else v)
                                           for k, v in r.items()} for r in aggs])
    numbers = {"runs": [{"path": str(r.path), "env": r.task[0], "dataset": r.task[1], "setting": r.setting,
                         "seed": r.config.get("seed"), "normalized": r.normalized,
                         "offline": r.score("offline", r.normalized), "online": r.score("online", r.normalized),
                         "delta": r.score("delta", r.normalized)}
                        for r in runs],
               "incomplete": [str(p) for p in incomplete], "setting_keys": setting_keys, "table": table,
               "aggregate_tasks": [list(t) for t in tasks], "aggregate_unit": "normalized" if normalized else "return",
               "aggregates": aggs, "differences": diffs, "differences_left_out": diff_notes, "curves": curve_rows,
               "performance_profiles": profiles,
               "online_evals": a.online_evals, "bootstrap": {"reps": a.reps, "seed": a.seed, "confidence": 0.95, "method": "percentile"}}
    (a.out / "report.json").write_text(json.dumps(_finite(numbers), indent=1, allow_nan=False) + "\n")
    print(text.split("## Plots")[0].rstrip())
    print(f"\nreport: {a.out / 'report.md'} (table.csv, aggregates.csv, report.json, learning_curves.png, "
          "performance_profile.png)")
    return 0


def _finite(v):
    """NaN (a phase no run of a row has) as null: JSON has no NaN, CSV readers expect an empty cell."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
