"""`odt eval`: a policy over fresh episodes, from a run directory, a shipped model (odt:NAME) or a
Hugging Face DecisionTransformerModel directory; at one target, or at several (--targets: the
return-following curve, following.py)."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import hf
from .config import Config, ConfigError
from .envs.make import make_env_checked, make_vector_env
from .envs.video import MAX_FRAMES, check_video, recording_vector_env
from .following import (DEFAULT_NAME, auto_targets, curve_table, data_returns, evaluate_target, free_path,
                        parse_targets, plot_curve, read_curve, target_row)
from .logging import fmt_return
from .policy import load_policy
from .rollout import rollout
from .scores import return_stats


# The flags odt eval of a model directory reads; it refuses the others, which read a run's own files.
HANDLED = ("run", "episodes", "target", "seed", "sample", "device", "threads", "json", "env", "rtg_scale",
           "eval_context")


@dataclass
class EvalArgs:
    run: Path
    """Run directory, odt:NAME (a shipped model), or Hugging Face DecisionTransformerModel directory, to evaluate."""
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
    env: Optional[str] = None
    """A Hugging Face model directory only: the environment, where its config.json has no env_id."""
    rtg_scale: Optional[float] = None
    """A Hugging Face model directory only: the returns-to-go scale, where its config.json has no return_scale."""
    eval_context: Optional[int] = None
    """A Hugging Face model directory only: the acting window, where its config.json has no context_length."""


def eval_command(a: EvalArgs) -> int:
    """`odt eval`: an odt run (or shipped model), else a Hugging Face model directory."""
    if a.episodes <= 0 or a.threads < 0 or a.seed < 0:
        raise ConfigError(f"--episodes must be positive, --threads >= 0 and --seed >= 0, got {a.episodes}, {a.threads} "
                          f"and {a.seed}")
    if a.target is not None and not math.isfinite(a.target):
        raise ConfigError(f"--target must be a finite number, got {a.target}")
    extra = [f"--{n.replace('_', '-')}" for n in ("env", "rtg_scale", "eval_context") if getattr(a, n) is not None]
    if not hf.is_model_dir(a.run) and extra:
        raise ConfigError(f"{', '.join(extra)}: for a Hugging Face model directory; the run {a.run} has its own "
                          "in its config.json")
    out = _eval_hf(a) if hf.is_model_dir(a.run) else _eval_run(a)
    if out is None:  # the return-following curve, written and shown
        return 0
    if a.json:
        print(json.dumps(out))
        return 0
    norm = f", normalized {out['normalized_mean']:.1f} +- {out['normalized_std']:.1f}" if "normalized_mean" in out else ""
    print(f"{out['env']} at target {out['target']:g} over {a.episodes} episodes: return "
          f"{fmt_return(out['return_mean'])} +- {fmt_return(out['return_std'])}{norm}")
    if out.get("videos"):
        print(f"videos: {', '.join(out['videos'])}")
    return 0


def _eval_hf(a: EvalArgs) -> dict:
    # odt eval's other flags (return-following curves, videos, checkpoints) read an odt run's files
    unused = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(EvalArgs)
              if f.name not in HANDLED and f.default is not dataclasses.MISSING and getattr(a, f.name) != f.default]
    if unused:
        raise ConfigError(f"{', '.join(unused)}: odt eval of a Hugging Face model directory takes "
                          f"{', '.join('--' + n.replace('_', '-') for n in HANDLED if n != 'run')} only")
    if (a.rtg_scale is not None and not 0 < a.rtg_scale < math.inf) or (a.eval_context is not None
                                                                       and a.eval_context <= 0):
        raise ConfigError("--rtg-scale and --eval-context must be positive (and finite)")
    m = hf.read(a.run)  # every check, and the settings, before any environment is made
    env_id = hf.setting(m, "env_id", a.env, "--env")
    target = float(hf.setting(m, "target_return", a.target, "--target"))
    rtg_scale = hf.setting(m, "return_scale", a.rtg_scale, "--rtg-scale")
    context = hf.setting(m, "context_length", a.eval_context, "--eval-context")
    if a.threads:
        torch.set_num_threads(a.threads)
    hf.check_env(m, env_id)
    policy = load_policy(a.run, device=a.device, action="sample" if a.sample else "mean", rtg_scale=rtg_scale, context=context)
    envs = make_vector_env(env_id, a.episodes)
    res = rollout(policy, envs, target, seed=a.seed)
    envs.close()
    return {"run": str(a.run), "env": env_id, "target": target, "episodes": a.episodes,
            **return_stats(env_id, res.returns), "length_mean": float(res.lengths.mean())}


def _eval_run(a: EvalArgs) -> dict | None:
    """An odt run's policy over fresh episodes, at one target or (--targets) several (written and
    shown here: None)."""
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
    targets = _curve_targets(a)
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
            return _curve(a, cfg, policy, envs, targets, data)
        target = cfg.g_eval if a.target is None else a.target
        res, videos = evaluate_target(policy, envs, target, a.seed, a.video)
    finally:
        envs.close()
    return {"run": str(a.run), "env": cfg.env, "target": target, "episodes": a.episodes,
            **return_stats(cfg.env, res.returns, cfg.reference()), "length_mean": float(res.lengths.mean()),
            "returns": res.returns.tolist(), "lengths": res.lengths.tolist(),
            **({"videos": [str(v.path) for v in videos]} if a.video is not None else {})}


def _curve_targets(a: EvalArgs) -> list[float] | str | None:
    """The targets of --targets (None without it), and its flags checked before any work."""
    if a.targets is None:
        if a.out is not None or a.plot is not None:
            raise ConfigError("--out and --plot belong to the return-following curve; add --targets T1,T2,... or auto")
        return None
    if a.target is not None:
        raise ConfigError("give --target (one target) or --targets (the return-following curve), not both")
    if a.compare and a.plot is None:
        raise ConfigError("--compare draws earlier curves beside this one on --plot; add --plot FILE.png")
    for path in a.compare:
        read_curve(path)
    for flag, path in (("--out", a.out), ("--plot", a.plot)):
        if path is not None and path.exists():
            raise ConfigError(f"{flag} {path} exists; odt eval overwrites nothing: choose another name")
    return parse_targets(a.targets)


def _curve(a: EvalArgs, cfg: Config, policy, envs, targets: list[float] | str, data: dict | None) -> None:
    """Each target over the same seeds; the table (or --json), the JSON file and the plot."""
    if targets == "auto":
        targets = auto_targets(data["min"], data["max"])
    rows = []
    for target in targets:
        res, videos = evaluate_target(policy, envs, target, a.seed, a.video, prefix=f"target-{target:g}-")
        rows.append(target_row(cfg, target, res, videos))
    curve = {"run": str(a.run), "env": cfg.env, "checkpoint": a.checkpoint, "episodes": a.episodes, "seed": a.seed,
             "sample": a.sample, "data_returns": data, "targets": rows}
    if a.plot is not None:  # first: a plot that fails leaves no JSON behind to block the rerun
        a.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_curve([*(read_curve(p) for p in a.compare), curve], a.plot)
    out = a.out or free_path(a.run / f"{DEFAULT_NAME}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(curve, indent=2) + "\n")
    if a.json:
        print(json.dumps(curve))
    else:
        print(curve_table(curve))
        print(f"wrote {out}" + (f" and {a.plot}" if a.plot is not None else ""))
