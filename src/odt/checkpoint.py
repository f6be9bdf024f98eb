"""Checkpoints: complete (model, every optimizer and scheduler, lambda, normaliser), written
atomically, and loaded without executing code from the file (``weights_only=True``)."""
from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import torch

from .config import Config, ConfigError
from .models.transformer import DecisionTransformer, ModelSpec


def save_checkpoint(path: Path, learner, *, obs_mean, obs_std, act_low, act_high, extra: dict | None = None) -> None:
    state = {
        "learner": learner.state_dict(),
        "spec": dataclasses.asdict(learner.model.spec),
        "obs_mean": torch.as_tensor(obs_mean), "obs_std": torch.as_tensor(obs_std),
        "act_low": torch.as_tensor(act_low), "act_high": torch.as_tensor(act_high),
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def load_checkpoint(path: Path, device: str = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}; give a run directory that holds checkpoints/")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(f"refusing to load {path}: it is not a plain-tensor checkpoint "
                          "(loading it could run code); use a checkpoint written by odt") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ConfigError(f"cannot read checkpoint {path} ({str(e).splitlines()[0]}); "
                          "it is truncated or not an odt checkpoint") from e


def find_checkpoint(run_dir: Path, name: str = "final") -> Path:
    """A run directory's checkpoint by name, falling back to the latest one written."""
    ckpts = Path(run_dir) / "checkpoints"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist; give the --out of an earlier run")
    for candidate in (name, "final", "latest", "pretrained"):
        p = ckpts / f"{candidate}.pt"
        if p.is_file():
            return p
    p = Path(name)
    if p.is_file():
        return p
    raise ConfigError(f"no checkpoint in {ckpts}; was the run stopped before it saved one?")


def build_model(spec: dict, device: str) -> DecisionTransformer:
    return DecisionTransformer(ModelSpec(**spec)).to(device)


def load_policy(run_dir: Path, checkpoint: str = "final", device: str = "cpu", deterministic: bool = True):
    from .rollout import Policy

    state = load_checkpoint(find_checkpoint(run_dir, checkpoint), device)
    cfg = Config.load(Path(run_dir) / "config.json")
    model = build_model(state["spec"], device)
    model.load_state_dict(state["learner"]["model"])
    model.eval()
    return Policy(model, state["obs_mean"].cpu().numpy(), state["obs_std"].cpu().numpy(),
                  state["act_low"].cpu().numpy(), state["act_high"].cpu().numpy(),
                  rtg_scale=cfg.rtg_scale, context=cfg.eval_context, deterministic=deterministic)
