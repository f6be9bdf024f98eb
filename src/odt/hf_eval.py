"""`odt eval --run DIR` where DIR is a Hugging Face DecisionTransformerModel directory (odt.hf):
the flags that give what its config.json may lack, and the evaluation. An odt run goes on to
evaluation.eval_command."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import evaluation, hf
from .config import ConfigError
from .envs.make import make_vector_env
from .logging import fmt_return
from .policy import load_policy
from .rollout import rollout
from .scores import return_stats


# The flags odt eval of a model directory reads; it refuses the others, which read a run's own files.
HANDLED = ("run", "episodes", "target", "seed", "sample", "device", "threads", "json", "env", "rtg_scale",
           "eval_context")


@dataclass
class EvalArgs(evaluation.EvalArgs):
    run: Path
    """Run directory, odt:NAME (a shipped model), or Hugging Face DecisionTransformerModel directory, to evaluate."""
    env: Optional[str] = None
    """A Hugging Face model directory only: the environment, where its config.json has no env_id."""
    rtg_scale: Optional[float] = None
    """A Hugging Face model directory only: the returns-to-go scale, where its config.json has no return_scale."""
    eval_context: Optional[int] = None
    """A Hugging Face model directory only: the acting window, where its config.json has no context_length."""


def eval_command(a: EvalArgs) -> int:
    """`odt eval`: a Hugging Face model directory here, an odt run by evaluation.eval_command."""
    extra = [f"--{n.replace('_', '-')}" for n in ("env", "rtg_scale", "eval_context") if getattr(a, n) is not None]
    if not hf.is_model_dir(a.run):
        if extra:
            raise ConfigError(f"{', '.join(extra)}: for a Hugging Face model directory; the run {a.run} has its own "
                              "in its config.json")
        return evaluation.eval_command(a)
    # odt eval's other flags (return-following curves, videos, checkpoints) read an odt run's files
    unused = [f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(evaluation.EvalArgs)
              if f.name not in HANDLED and f.default is not dataclasses.MISSING and getattr(a, f.name) != f.default]
    if unused:
        raise ConfigError(f"{', '.join(unused)}: odt eval of a Hugging Face model directory takes "
                          f"{', '.join('--' + n.replace('_', '-') for n in HANDLED if n != 'run')} only")
    evaluation.check_eval_numbers(a)
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
    out = {"run": str(a.run), "env": env_id, "target": target, "episodes": a.episodes,
           **return_stats(env_id, res.returns), "length_mean": float(res.lengths.mean())}
    if a.json:
        print(json.dumps(out))
    else:
        norm = (f", normalized {out['normalized_mean']:.1f} +- {out['normalized_std']:.1f}"
                if "normalized_mean" in out else "")
        print(f"{env_id} at target {target:g} over {a.episodes} episodes: return "
              f"{fmt_return(out['return_mean'])} +- {fmt_return(out['return_std'])}{norm}")
    return 0
