"""The return-following curve of `odt eval --targets`. A return-conditioned policy is asked for each
of several returns over the same episode seeds (so the target is the only difference between
them); the achieved return against the target, beside the offline data's range, shows where the
policy follows its condition, where it saturates, and whether it extrapolates beyond the data."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .config import Config, ConfigError
from .data.sources import load_dataset
from .logging import fmt_return
from .rollout import RolloutResult, rollout
from .scores import return_stats
from .envs.video import recorders

DEFAULT_NAME = "return_following"


def evaluate_target(policy, envs, target: float, seed: int, video_dir: Path | None,
                    prefix: str = "") -> tuple[RolloutResult, list]:
    """One episode per environment at ``target``; the recorded environments' episodes written to
    video_dir/PREFIXepisode-I.mp4 (episode I ran in environment I: its return is returns[I])."""
    for i, recorder in enumerate(recorders(envs)):
        recorder.arm(video_dir / f"{prefix}episode-{i}.mp4")
    res = rollout(policy, envs, target, seed=seed)
    return res, [v for v in (r.finish() for r in recorders(envs)) if v is not None]


def parse_targets(text: str) -> list[float] | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--targets takes comma-separated returns (900,1800,2700,3600) or auto, got {text!r}")
    return values


def data_returns(cfg: Config, run: Path, needed: bool) -> dict | None:
    """The lowest, mean and best return of the run's offline data (config.json names it), or None
    where the run had none or it cannot be loaded now and ``needed`` is false."""
    if cfg.dataset == "none":
        if needed:
            raise ConfigError(f"--targets auto spreads the targets over the offline data's returns, and {run} "
                              "trained without data (--dataset none); give the targets")
        return None
    try:
        returns = load_dataset(cfg.dataset, download=False).returns()
    except ConfigError as e:
        if needed:
            raise ConfigError(f"--targets auto needs the run's dataset to spread the targets over: {e}") from None
        return None
    return {"dataset": cfg.dataset, "min": float(returns.min()), "mean": float(returns.mean()),
            "max": float(returns.max())}


def auto_targets(lowest: float, best: float) -> list[float]:
    """Six targets from the data's lowest return to its best, then two beyond the best (by a
    quarter and a half of the data's range), at four significant digits."""
    span = best - lowest or abs(best) or 1.0
    values = [*np.linspace(lowest, best, 6), best + 0.25 * span, best + 0.5 * span]
    return [float(f"{v:.4g}") for v in values]


def target_row(cfg: Config, target: float, res: RolloutResult, videos: list) -> dict:
    """One target's statistics; the standard error is std / sqrt(episodes), as the run's summary
    table gives it, and the per-episode returns are kept so that anything can be recomputed."""
    n = len(res.returns)
    stats = return_stats(cfg.env, res.returns, cfg.reference())
    row = {"target": target, "episodes": n, **stats, "return_stderr": stats["return_std"] / math.sqrt(n)}
    if "normalized_std" in stats:
        row["normalized_stderr"] = stats["normalized_std"] / math.sqrt(n)
    row.update(length_mean=float(res.lengths.mean()), returns=res.returns.tolist(), lengths=res.lengths.tolist())
    if videos:
        row["videos"] = [str(v.path) for v in videos]
    return row


def read_curve(path: Path) -> dict:
    try:
        curve = json.loads(Path(path).read_text())
        rows = curve["targets"]
        if (all(isinstance(curve[k], (str, int)) for k in ("run", "checkpoint", "episodes", "env")) and rows
                and all(isinstance(r[k], (int, float)) for r in rows for k in ("target", "return_mean", "return_stderr"))):
            return curve
    except (OSError, ValueError, TypeError, KeyError):
        pass
    raise ConfigError(f"--compare {path}: not a return-following JSON file; give one `odt eval --targets` wrote")


def free_path(path: Path) -> Path:
    """``path``, or NAME-2.json, NAME-3.json, ... : the first that does not exist."""
    i = 2
    while path.exists():
        path = path.with_name(f"{DEFAULT_NAME}-{i}{path.suffix}")
        i += 1
    return path


def curve_table(curve: dict) -> str:
    data = curve["data_returns"]
    span = (f"the data's returns {fmt_return(data['min'])} to {fmt_return(data['max'])}" if data
            else "the data's returns unknown")
    lines = [f"return following of {curve['run']} ({curve['checkpoint']}) in {curve['env']}: "
             f"{curve['episodes']} episodes per target, seed {curve['seed']}; {span}",
             f"{'target':>10}{'return':>22}{'normalized':>18}{'length':>10}"]
    for r in curve["targets"]:
        norm = f"{r['normalized_mean']:.1f} +- {r['normalized_stderr']:.1f}" if "normalized_mean" in r else "-"
        ret = f"{fmt_return(r['return_mean'])} +- {fmt_return(r['return_stderr'])}"
        lines.append(f"{fmt_return(r['target']):>10}{ret:>22}{norm:>18}{r['length_mean']:>10.1f}")
    lines.append("(+- is the standard error of the mean over the episodes; every target runs the same episode seeds)")
    return "\n".join(lines)


def plot_curve(curves: list[dict], path: Path) -> None:
    """Achieved return (mean and standard error) against the target, one line per curve (the last
    is this evaluation's), the identity line, and the offline data's range of returns shaded on
    the target axis (where targets are in-distribution)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # slow to import: only when a plot is drawn

    curve = curves[-1]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    data = curve["data_returns"]
    if data:
        ax.axvspan(data["min"], data["max"], color="grey", alpha=0.15, label="offline data's returns")
    ends = []
    for c in curves:
        t = np.array([r["target"] for r in c["targets"]])
        m, se = np.array([r["return_mean"] for r in c["targets"]]), np.array([r["return_stderr"] for r in c["targets"]])
        ends += [t.min(), t.max(), (m - se).min(), (m + se).max()]
        ax.errorbar(t, m, yerr=se, marker="o", capsize=3,
                    label=f"{Path(c['run']).name} ({c['checkpoint']}): mean ± s.e., {c['episodes']} episodes")
    ax.plot([min(ends), max(ends)], [min(ends), max(ends)], ls="--", lw=1, color="black", label="achieved = target")
    ax.set(xlabel="target return", ylabel="achieved return", title=f"{curve['env']}: return following")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
