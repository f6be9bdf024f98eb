"""Checkpoints: complete (model, every optimizer and scheduler, lambda, normalizer), written
atomically with a SHA-256 beside each, the previous one kept, and loaded without executing code
from the file (``weights_only=True``). A checkpoint whose checksum does not match is skipped, with
a warning, for the previous one."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import shutil
import sys
from pathlib import Path

import torch

from .config import ConfigError
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
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    for suffix in ("", ".sha256"):  # the previous checkpoint stays, in case this one is lost
        src, dst = Path(str(path) + suffix), Path(str(_previous(path)) + suffix)
        if src.is_file():
            # A hard link, not a rename: the name never points at nothing, even for a moment.
            tmp = dst.with_name(dst.name + ".tmp")
            tmp.unlink(missing_ok=True)
            try:
                os.link(src, tmp)
            except OSError:  # a file system without hard links
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
    _write_atomic(path, data)
    _write_atomic(Path(str(path) + ".sha256"), (hashlib.sha256(data).hexdigest() + "\n").encode())


def _previous(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


class CorruptCheckpoint(ConfigError):
    """A checkpoint that does not match its recorded SHA-256."""


def load_checkpoint(path: Path, device: str = "cpu") -> dict:
    """One checkpoint file: read once, checked against its SHA-256 where it has one (checkpoints
    from before checksums have none), then unpickled with ``weights_only``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}; give a run directory that holds checkpoints/")
    data = path.read_bytes()
    digest = Path(str(path) + ".sha256")
    if digest.is_file() and hashlib.sha256(data).hexdigest() != digest.read_text().strip():
        raise CorruptCheckpoint(f"checkpoint {path} does not match its checksum ({digest.name}): it is "
                                "corrupted; use another checkpoint of the run")
    try:
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(f"refusing to load {path}: it is not a plain-tensor checkpoint "
                          "(loading it could run code); use a checkpoint written by odt") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ConfigError(f"cannot read checkpoint {path} ({str(e).splitlines()[0]}); "
                          "it is truncated or not an odt checkpoint") from e


def load_from_run(run_dir: Path, name: str = "final", device: str = "cpu") -> tuple[dict, Path]:
    """A run directory's checkpoint by name (or a checkpoint file), else the most advanced one
    there; a checkpoint that fails its checksum gives way to its previous version, with a warning."""
    if Path(name).suffix == ".pt" and Path(name).is_file():
        return load_checkpoint(Path(name), device), Path(name)
    ckpts = Path(run_dir) / "checkpoints"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist; give the --out of an earlier run")
    corrupted = []
    for candidate in [name] + [n for n in ("final", "latest", "pretrained") if n != name]:
        for p in (ckpts / f"{candidate}.pt", _previous(ckpts / f"{candidate}.pt")):
            if not p.is_file():
                continue
            try:
                state = load_checkpoint(p, device)
            except CorruptCheckpoint:
                corrupted.append(str(p))
                continue
            if corrupted:
                print(f"odt: warning: {', '.join(corrupted)} failed its checksum; using {p}", file=sys.stderr)
            return state, p
    if corrupted:
        raise ConfigError(f"every checkpoint in {ckpts} failed its checksum ({', '.join(corrupted)}); "
                          "the run cannot be loaded")
    raise ConfigError(f"no checkpoint in {ckpts}; was the run stopped before it saved one?")


def build_model(spec: dict, device: str) -> DecisionTransformer:
    return DecisionTransformer(ModelSpec(**spec)).to(device)
