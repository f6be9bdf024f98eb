"""Pretrained models that ship in the package, addressed as ``odt:NAME`` wherever a run directory is
taken (``--init``, ``odt eval --run``, ``odt export``, ``Policy.load``).

Each is one safetensors file (the tensors of a checkpoint: the actor, and for TD3 algorithms the
critics after their critic-only warm-up, with every optimizer's state, so that ``--init`` carries
what `odt run` carries from one phase to the next) and a card (``NAME.json``: the command that made
it, its data, its 50-episode offline score, the code's version, and the run's config.json). On first
use it unpacks into a run directory in the cache, which every command then reads as it reads any
run's. safetensors holds tensors only; the checkpoint's other entries (step counters, optimizer
hyperparameters) ride in its string metadata as one JSON skeleton.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .cache import cache_subdir, make_dirs, verified, write_atomic
from .config import ConfigError

MODELS = Path(__file__).parent / "data" / "models"
PREFIX = "odt:"


def names() -> list[str]:
    return sorted(p.stem for p in MODELS.glob("*.json"))


def card(name: str) -> dict:
    path = MODELS / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"no shipped model {PREFIX}{name}; the package ships "
                          f"{', '.join(PREFIX + n for n in names()) or 'none'}")
    return json.loads(path.read_text())


def resolve(run: str | Path | None) -> Path | None:
    """``odt:NAME`` as the run directory it unpacks to (made on first use, and made again where it
    no longer matches its checksum); any other path as it is."""
    if run is None or not str(run).startswith(PREFIX):
        return None if run is None else Path(run)
    name = str(run)[len(PREFIX):]
    info = card(name)
    weights = MODELS / f"{name}.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    out = cache_subdir("models") / f"{name}-{digest}"
    files = [out / "config.json", out / "card.json", out / "checkpoints" / "pretrained.pt"]

    def unpack_into_cache() -> None:
        make_dirs(out / "checkpoints")
        write_atomic(files[0], (json.dumps(info["config"], indent=2) + "\n").encode())
        write_atomic(files[1], (json.dumps({k: v for k, v in info.items() if k != "config"}, indent=2) + "\n").encode())
        buf = io.BytesIO()
        torch.save(unpack(weights), buf)
        write_atomic(files[2], buf.getvalue())

    verified(out.with_name(out.name + ".sha256"), files, unpack_into_cache, f"odt: warning: {PREFIX}{name}",
             "unpacking it again from the package", lambda line: print(line, file=sys.stderr, flush=True))
    return out


def _flatten(obj, tensors: dict, key: str = "t"):
    """The checkpoint as a JSON skeleton whose tensors are named by their path in ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        # Optimizer states key their parameters by int: the skeleton keeps each key's type.
        return {"__dict__": [[k, isinstance(k, int), _flatten(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    return obj


def _rebuild(skeleton, tensors: dict):
    if isinstance(skeleton, dict) and "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if isinstance(skeleton, dict) and "__dict__" in skeleton:
        return {int(k) if is_int else k: _rebuild(v, tensors) for k, is_int, v in skeleton["__dict__"]}
    if isinstance(skeleton, dict) and "__list__" in skeleton:
        items = [_rebuild(v, tensors) for v in skeleton["__list__"]]
        return tuple(items) if skeleton["tuple"] else items
    return skeleton


def unpack(path: Path) -> dict:
    """The checkpoint that ``pack`` wrote into ``path``."""
    with safe_open(str(path), "pt") as f:
        skeleton = json.loads(f.metadata()["skeleton"])
    return _rebuild(skeleton, load_file(str(path)))


def pack(state: dict, path: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, tensors)
    save_file(tensors, str(path), metadata={"skeleton": json.dumps(skeleton)})
