"""The loop's evaluations: mean actions at g_eval over a vector environment, rows for metrics.jsonl
(per task in multi-task runs), and the run's summary table."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .config import Config
from .data.trajectories import TrajectoryDataset
from .envs.pool import EnvPool
from .logging import RunLogger, fmt_return, fmt_time
from .policy import EnsemblePolicy, Policy
from .rollout import RolloutResult, rollout
from .schedules import ReturnTarget
from .scores import return_stats
from .envs.video import recorders


class Evaluator:
    """The same environment seeds at every evaluation of a run, so that its evaluations compare."""

    def __init__(self, cfg: Config, envs: EnvPool, logger: RunLogger):
        self.cfg, self.envs, self.logger = cfg, envs, logger

    def __call__(self, policy: Policy | EnsemblePolicy, g_eval: float | np.ndarray, phase: str, updates: int,
                 online_steps: int) -> dict:
        t = time.time()
        cfg = self.cfg
        # --capture-video: the same seeds in environments of their own, the first one recorded
        envs = self.envs.get(cfg.eval_episodes, recorded=1 if cfg.capture_video else 0)
        name = Path("videos") / f"{phase}-updates{updates:07d}-steps{online_steps:08d}.mp4"
        if cfg.capture_video:
            (self.logger.run_dir / "videos").mkdir(exist_ok=True)
            recorders(envs)[0].arm(self.logger.run_dir / name, thumbnails=self.logger.tb is not None)
        res = rollout(policy, envs, g_eval, seed=1_000_000 + cfg.seed * 1000)
        video = recorders(envs)[0].finish() if cfg.capture_video else None
        row = {"phase": phase, "event": "eval", "updates": updates, "online_steps": online_steps,
               **(self._task_stats(res) if self.envs.tasks else
                  {"g_eval": g_eval, **{f"eval_{k}": v for k, v in
                                        return_stats(cfg.env, res.returns, cfg.reference()).items()}}),
               "eval_length_mean": float(res.lengths.mean()), "eval_episodes": len(res.returns),
               **({"video": str(name)} if video else {})}
        self.logger.log(row)
        if video:
            self.logger.video(row, video)
        norm_txt = f"  normalized {row['eval_normalized_mean']:.1f}" if "eval_normalized_mean" in row else ""
        self.logger.info(f"[{phase}] eval after {updates} updates, {online_steps} online steps: "
                         f"return {fmt_return(row['eval_return_mean'])} +- {fmt_return(row['eval_return_std'])}"
                         f"{norm_txt} "
                         f"({time.time() - t:.1f} s)")
        return row

    def target(self, return_target: ReturnTarget | None, dataset: TrajectoryDataset) -> float | np.ndarray:
        """g_eval: --g-eval, each task's, or with --eval-target best the highest return observed
        (at first the data's best)."""
        if self.envs.tasks:
            return self.envs.per_env("g_eval", self.cfg.eval_episodes)
        if self.cfg.eval_target == "best":
            return return_target.highest if return_target is not None else float(dataset.returns().max())
        return self.cfg.g_eval

    def _task_stats(self, res: RolloutResult) -> dict:
        """Per task eval_<task>_*; eval_return_mean and eval_normalized_mean average the tasks'
        means (the safety nets compare the normalized one where every task has a reference)."""
        tasks = self.envs.tasks
        row, means, norms = {}, [], []
        task_of_episode = np.array(res.env_index) % len(tasks)
        for t, task in enumerate(tasks):
            stats = return_stats(task.env_id, res.returns[task_of_episode == t], task.reference)
            row[f"g_eval_{task.key}"] = task.g_eval
            row.update({f"eval_{task.key}_{k}": v for k, v in stats.items()})
            means.append(stats["return_mean"])
            norms.append(stats.get("normalized_mean"))
        row["eval_return_mean"], row["eval_return_std"] = float(np.mean(means)), float(np.std(means))
        if all(n is not None for n in norms):
            row["eval_normalized_mean"], row["eval_normalized_std"] = float(np.mean(norms)), float(np.std(norms))
        return row


def summary_of(row: dict) -> dict:
    """An evaluation row as the summary keeps it: return_mean, normalized_mean, ..., updates."""
    return {k.replace("eval_", ""): v for k, v in row.items() if k.startswith("eval_") or k in ("updates", "online_steps")}


def summary_table(summary: dict) -> str:
    """Offline and final evaluations with their standard errors (std / sqrt(episodes)), and the
    change with the standard error of a difference of two independent means."""
    def se(s: dict, key: str) -> float:
        return s[f"{key}_std"] / max(s.get("episodes", 1), 1) ** 0.5

    lines = [f"{'':<10}{'return':>20}{'normalized':>20}{'episodes':>10}{'updates':>10}{'online steps':>14}"]
    for name in ("offline", "final"):
        s = summary.get(name)
        if not s:
            continue
        ret = f"{fmt_return(s['return_mean'])} +- {fmt_return(se(s, 'return'))}"
        norm = f"{s['normalized_mean']:.1f} +- {se(s, 'normalized'):.1f}" if "normalized_mean" in s else "-"
        lines.append(f"{name:<10}{ret:>20}{norm:>20}{s.get('episodes', '-'):>10}{s['updates']:>10}"
                     f"{s['online_steps']:>14}")
    off, fin = summary.get("offline"), summary.get("final")
    if off and fin:
        key = "normalized" if "normalized_mean" in fin and "normalized_mean" in off else "return"
        delta = fin[f"{key}_mean"] - off[f"{key}_mean"]
        err = (se(off, key) ** 2 + se(fin, key) ** 2) ** 0.5
        if key == "normalized":
            lines.append(f"{'change':<10}{'':>20}{f'{delta:+.1f} +- {err:.1f}':>20}")
        else:
            lines.append(f"{'change':<10}{'+' * (delta >= 0) + fmt_return(delta) + ' +- ' + fmt_return(err):>20}")
    lines.append("(+- is the standard error of the mean over the evaluation episodes)")
    lines.append(f"wall time {fmt_time(summary.get('wall_time_s', 0))}; run directory {summary.get('run_dir')}")
    return "\n".join(["", "summary", *lines])
