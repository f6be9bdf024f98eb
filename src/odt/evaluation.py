"""Evaluation: mean actions at g_eval over a vector environment, rows for metrics.jsonl (per task in
multi-task runs), the run's summary table, and `odt eval`."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .config import Config, ConfigError
from .data.trajectories import TrajectoryDataset
from .envs.make import make_env_checked, make_vector_env
from .envs.pool import EnvPool
from .following import check_curve_args, curve_command, data_returns, evaluate_target
from .logging import RunLogger, fmt_return, fmt_time
from .policy import EnsemblePolicy, Policy, load_policy
from .rollout import RolloutResult, rollout
from .schedules import ReturnTarget
from .scores import return_stats
from .video import MAX_FRAMES, check_video, recorders, recording_vector_env


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


@dataclass
class EvalArgs:
    run: Path
    """Run directory to evaluate, or odt:NAME, a shipped model (`odt presets` lists them)."""
    checkpoint: str = "final"
    """Checkpoint name in the run's checkpoints/ (final, latest, pretrained) or a file path."""
    episodes: int = 10
    """Episodes (per target with --targets), run together in one vector environment."""
    target: Optional[float] = None
    """Return-to-go target; default the run's g_eval."""
    targets: Optional[str] = None
    """The return-following curve: targets 900,1800,2700,3600, or auto (over the data's returns and beyond)."""
    out: Optional[Path] = None
    """--targets: the JSON file (must not exist); default RUN_DIR/return_following.json, else -2, -3, ..."""
    plot: Optional[Path] = None
    """--targets: a PNG of achieved return (mean, standard error) against target (must not exist)."""
    compare: tuple[Path, ...] = ()
    """--plot: earlier --targets JSON files drawn on the same axes (e.g. the pretrained checkpoint's)."""
    video: Optional[Path] = None
    """A new or empty directory for MP4s of the first --video-episodes episodes (of each target)."""
    video_episodes: int = 1
    """--video: episodes recorded (of each target); rendering costs about 0.1 s a frame on a CPU."""
    video_frames: int = MAX_FRAMES
    """--video: frames per video at most, one per step (the episode goes on unrendered past them)."""
    seed: int = 0
    """Seed of the evaluation environments."""
    sample: bool = False
    """Sample actions instead of taking the mean action."""
    device: str = "cpu"
    """Torch device."""
    threads: int = 0
    """torch.set_num_threads; 0 keeps torch's default (one per core: give 1 beside a running sweep)."""
    json: bool = False
    """Print one JSON object instead of text."""


def check_eval_numbers(a: EvalArgs) -> None:
    """The numbers every `odt eval` takes, a run's or a Hugging Face model's."""
    if a.episodes <= 0 or a.threads < 0 or a.seed < 0:
        raise ConfigError(f"--episodes must be positive, --threads >= 0 and --seed >= 0, got {a.episodes}, {a.threads} "
                          f"and {a.seed}")
    if a.target is not None and not math.isfinite(a.target):
        raise ConfigError(f"--target must be a finite number, got {a.target}")


def eval_command(a: EvalArgs) -> int:
    """`odt eval RUN`: a run's policy over fresh episodes, at one target or (--targets) several."""
    check_eval_numbers(a)
    if a.video_episodes <= 0 or a.video_frames <= 0:
        raise ConfigError(f"--video-episodes and --video-frames must be positive, got {a.video_episodes} and "
                          f"{a.video_frames}")
    cfg = Config.load(a.run / "config.json") if (a.run / "config.json").is_file() else None
    if cfg is None:
        raise ConfigError(f"{a.run} is not a run directory (no config.json); give the --out of an odt run")
    if cfg.baseline:
        raise ConfigError(f"{a.run} is a {cfg.algo} baseline run; its evaluations are in its metrics.jsonl "
                          "(odt eval takes transformer runs)")
    if cfg.tasks:
        raise ConfigError(f"{a.run} is a multi-task run; its per-task evaluations are the eval_<task>_* entries "
                          "of its metrics.jsonl (odt eval takes single-task runs)")
    targets = check_curve_args(a)
    if a.video is not None:  # before any rollout: the directory, PyAV and off-screen rendering
        if a.video.exists() and (not a.video.is_dir() or any(a.video.iterdir())):
            raise ConfigError(f"--video {a.video} exists and is not an empty directory; give a new or empty one "
                              "(odt eval overwrites nothing)")
        check_video(cfg.env, "--video")
    data = data_returns(cfg, a.run, needed=targets == "auto") if targets is not None else None
    if a.threads:
        torch.set_num_threads(a.threads)
    policy = load_policy(a.run, a.checkpoint, device=a.device, action="sample" if a.sample else "mean")
    make_env_checked(cfg.env).close()
    if a.video is not None:  # every check passed: now something is written
        a.video.mkdir(parents=True, exist_ok=True)
    recorded = min(a.video_episodes, a.episodes) if a.video is not None else 0
    envs = (recording_vector_env(cfg.env, a.episodes, recorded, a.video_frames) if recorded
            else make_vector_env(cfg.env, a.episodes))
    try:
        if targets is not None:
            return curve_command(a, cfg, policy, envs, targets, data)
        target = cfg.g_eval if a.target is None else a.target
        res, videos = evaluate_target(policy, envs, target, a.seed, a.video)
    finally:
        envs.close()
    out = {"run": str(a.run), "env": cfg.env, "target": target, "episodes": a.episodes,
           **return_stats(cfg.env, res.returns, cfg.reference()), "length_mean": float(res.lengths.mean()),
           "returns": res.returns.tolist(), "lengths": res.lengths.tolist(),
           **({"videos": [str(v.path) for v in videos]} if a.video is not None else {})}
    if a.json:
        print(json.dumps(out))
    else:
        norm = f", normalized {out['normalized_mean']:.1f} +- {out['normalized_std']:.1f}" if "normalized_mean" in out else ""
        print(f"{cfg.env} at target {target:g} over {a.episodes} episodes: return "
              f"{fmt_return(out['return_mean'])} +- {fmt_return(out['return_std'])}{norm}")
        if videos:
            print(f"videos: {', '.join(str(v.path) for v in videos)}")
    return 0
