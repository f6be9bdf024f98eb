"""``odt report``: many runs summarised as the field reports them, in report.md, table.csv,
aggregates.csv, report.json and two plots (learning curves, performance profiles). The numbers
are report_stats.py's; this module reads the command line and renders them."""
from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import tyro

from .config import ConfigError, check_out_dir
from .report_stats import (GAMMA, Profiles, RunRecord, Summary, Uncompared, find_runs, label_settings,
                           performance_profiles, summarise)


@dataclass
class ReportArgs:
    runs: tyro.conf.Positional[list[Path]]
    """Run directories, or directories to search for them (the --out of an `odt sweep`)."""
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


def _task_name(task) -> str:
    return f"{task[1]} ({task[0]})"


def _uncompared(u: Uncompared) -> str:
    if u.missing is not None:
        return f"{_task_name(u.task)}: no online score of {u.missing}"
    return f"{_task_name(u.task)}: {u.settings} settings; `--against SETTING` compares each with one"


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


def plot_profiles(p: Profiles, n_tasks: int, normalized: bool, path: Path) -> None:
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(p.profiles, p.taus, performance_profile_cis=p.cis, ax=ax,
                                         xlabel="normalized score (tau)" if normalized
                                         else "return (tau; no normalized reference)",
                                         ylabel="fraction of runs with score > tau")
    ax.legend(fontsize=8)
    ax.set_title(f"performance profile over {n_tasks} task(s), 95% bootstrap bands", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _f(x: float) -> str:
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"  # small raw returns (toys) keep their digits


def _pm(mean: float, std: float) -> str:
    return "-" if math.isnan(mean) else f"{_f(mean)} +- {_f(std)}"


def _ci(row: dict, key: str) -> str:
    lo, hi = row[f"{key}_ci"]
    return f"{_f(row[key])} [{_f(lo)}, {_f(hi)}]"


def _scores_section(s: Summary) -> list[str]:
    runs = s.runs
    lines = ["# odt report", "",
             f"{len(runs)} complete runs on {len({r.task for r in runs})} task(s)"
             + (f"; {len(s.incomplete)} incomplete run(s) left out (no summary.json): "
                + ", ".join(str(p) for p in s.incomplete) if s.incomplete else "") + ".",
             ("One setting" if len({r.setting for r in runs}) == 1 else
              "Settings are labelled by the algorithm" + (f" and the keys that vary: {', '.join(s.setting_keys)}"
                                                          if s.setting_keys else ""))
             + "; seeds are the replicates.",
             "", "## Offline and online scores per task (Table 5.1 of the ODT paper)", "",
             f"Mean +- std over seeds; offline: the evaluation after pretraining; online: the mean of the last "
             f"{s.online_evals} evaluation(s) of finetuning; delta: online - offline, per run.",
             "", "| task | setting | unit | runs | offline | online | delta |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in s.table:
        lines.append(f"| {_task_name((r['env'], r['dataset']))} | {r['setting']} | {r['unit']} | {r['runs']} | "
                     f"{_pm(r['offline_mean'], r['offline_std'])} | {_pm(r['online_mean'], r['online_std'])} | "
                     f"{_pm(r['delta_mean'], r['delta_std'])} |")
    return lines


def _differences_section(s: Summary) -> list[str]:
    if not (s.differences or s.uncompared):
        return []
    lines = ["", "## Differences between settings (online)", "",
             f"Per task: the setting's online score minus the other's (difference of the means over seeds "
             f"[95% bootstrap interval, each setting's seeds resampled independently, {s.reps} resamples]) "
             f"and the probability of improvement P(setting > other) [95% interval] (rliable). A setting "
             f"with one seed gives no interval.", ""]
    if s.differences:
        lines += ["| task | setting | minus | unit | runs | online difference | P(improvement) |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for d in s.differences:
            poi_lo, poi_hi = d["probability_of_improvement_ci"]
            one = math.isnan(poi_lo)
            lines.append(f"| {_task_name((d['env'], d['dataset']))} | {d['setting']} | {d['minus']} | {d['unit']} | "
                         f"{d['runs']} vs {d['runs_minus']} | "
                         + (f"{_f(d['online_difference'])} | {d['probability_of_improvement']:.2f} |" if one else
                            f"{_ci(d, 'online_difference')} | "
                            f"{d['probability_of_improvement']:.2f} [{poi_lo:.2f}, {poi_hi:.2f}] |"))
    return lines + [""] * bool(s.uncompared) + [f"Not compared: {_uncompared(u)}." for u in s.uncompared]


def _aggregates_section(s: Summary) -> list[str]:
    normalized, tasks = s.normalized, s.tasks
    unit = "normalized scores" if normalized else "raw returns (no task has a normalized reference)"
    lines = ["", "## Aggregates across runs and tasks", "",
             f"Over {len(tasks)} task(s) in {unit}: {', '.join(_task_name(t) for t in tasks)}. Point estimate "
             f"[95% stratified bootstrap interval, {s.reps} resamples] (rliable)."
             + (f" Optimality gap: mean shortfall below {GAMMA:g}." if normalized else "")
             + " The delta rows aggregate each run's online - offline.", "",
             "| setting | phase | runs x tasks | IQM | mean |" + (" optimality gap |" if normalized else ""),
             "| --- | --- | --- | --- | --- |" + (" --- |" if normalized else "")]
    for a in s.aggregates:
        lines.append(f"| {a['setting']} | {a['phase']} | {a['runs_per_task']} x {a['tasks']} | {_ci(a, 'iqm')} | "
                     f"{_ci(a, 'mean')} |" + ((f" {_ci(a, 'optimality_gap')} |" if "optimality_gap" in a else " - |")
                                             if normalized else ""))
    if any(a["runs_left_out"] for a in s.aggregates):
        lines += ["", "rliable needs as many runs on every task: where tasks had more, the extra runs (highest "
                  "seeds) are left out of the aggregates (`runs_left_out` in report.json)."]
    return lines


def markdown(s: Summary) -> str:
    """report.md: the per-task table, the differences, the aggregates and the plots' links."""
    lines = _scores_section(s) + _differences_section(s)
    if any(r["unit"] == "return" for r in s.table):
        lines += ["", "Tasks in raw return have no normalized reference (D4RL's random and expert returns, or a "
                  "dataset's ref_min_score / ref_max_score)."]
    lines += _aggregates_section(s)
    lines += ["", "## Plots", "", "![learning curves](learning_curves.png)", "",
              "![performance profile](performance_profile.png)", ""]
    return "\n".join(lines)


def report_json(s: Summary, p: Profiles) -> dict:
    """report.json's content, NaN included (_finite makes it JSON)."""
    runs = [{"path": str(r.path), "env": r.task[0], "dataset": r.task[1], "setting": r.setting,
             "seed": r.config.get("seed"), "normalized": r.normalized,
             "offline": r.score("offline", r.normalized), "online": r.score("online", r.normalized),
             "delta": r.score("delta", r.normalized)}
            for r in s.runs]
    profiles = {"tau": p.taus.tolist(), **{k: {"profile": v.tolist(), "ci_low": p.cis[k][0].tolist(),
                                               "ci_high": p.cis[k][1].tolist()} for k, v in p.profiles.items()}}
    return {"runs": runs, "incomplete": [str(x) for x in s.incomplete], "setting_keys": s.setting_keys,
            "table": s.table, "aggregate_tasks": [list(t) for t in s.tasks],
            "aggregate_unit": "normalized" if s.normalized else "return", "aggregates": s.aggregates,
            "differences": s.differences, "differences_left_out": [_uncompared(u) for u in s.uncompared],
            "curves": s.curves, "performance_profiles": profiles, "online_evals": s.online_evals,
            "bootstrap": {"reps": s.reps, "seed": s.seed, "confidence": 0.95, "method": "percentile"}}


def _runs(a: ReportArgs) -> tuple[list[RunRecord], list[Path], list[str]]:
    """The runs labelled by setting, the incomplete ones and the setting keys; bad flags refused
    before anything is written."""
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
    return runs, incomplete, setting_keys


def report_command(a: ReportArgs) -> int:
    runs, incomplete, setting_keys = _runs(a)
    import matplotlib

    matplotlib.use("Agg")
    s = summarise(runs, incomplete, setting_keys, reps=a.reps, seed=a.seed, online_evals=a.online_evals,
                  against=a.against)
    a.out.mkdir(parents=True, exist_ok=True)
    plot_curves(s.curves, a.out / "learning_curves.png")
    profiles = performance_profiles(runs, s.tasks, s.normalized, a.reps, a.seed)
    plot_profiles(profiles, len(s.tasks), s.normalized, a.out / "performance_profile.png")
    text = markdown(s)
    (a.out / "report.md").write_text(text)
    _write_csv(a.out / "table.csv", [_finite({k: v for k, v in r.items() if k != "seeds"}) for r in s.table])
    _write_csv(a.out / "aggregates.csv", [{k: (" ".join(map(str, v)) if isinstance(v, list) else v)
                                           for k, v in r.items()} for r in s.aggregates])
    (a.out / "report.json").write_text(json.dumps(_finite(report_json(s, profiles)), indent=1, allow_nan=False) + "\n")
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
