"""Checkpoints: the dict of a run's component state dicts (``Trainer.state_dict``), written
atomically with a SHA-256 beside each, the previous one kept, and loaded without executing code
from the file (``weights_only=True``). A checkpoint whose checksum does not match is skipped, with
a warning, for the previous one. Checkpoints of earlier versions convert here, at load time, and
nowhere else (``upgrade``).

The layout (FORMAT 3): ``spec`` (the network's architecture), ``scaling`` (normalizer and action
bounds), ``ensemble`` (``learners``: each learner's state dict, TD3 critics under ``td3``;
``batch_rngs``), ``run`` (the counters, the summary so far, the length of metrics.jsonl),
``safety``, ``generators`` (torch's), and, once finetuning has begun, ``target`` and ``buffer``.
Tensors and plain Python values only."""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import torch

from .config import ConfigError
from .models.transformer import DecisionTransformer, ModelSpec
from .safety import SafetyNets
from .scaling import Scaling


FORMAT = 3  # 3: Scaling's discrete flag


def plain(value):
    """``value`` as plain Python values (numpy scalars become floats), which ``weights_only`` loads."""
    return json.loads(json.dumps(value))


def generator_states(torch_gen: torch.Generator) -> dict[str, torch.Tensor]:
    """torch's global generator (dropout), the run's own (sampled actions), and a GPU's, whose
    dropout masks come from its own generator."""
    state = {"torch": torch.get_rng_state(), "policy": torch_gen.get_state()}
    if torch_gen.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch_gen.device)
    return state


def load_generator_states(state: dict, torch_gen: torch.Generator) -> bool:
    """torch's generators as a checkpoint left them, where they fit this run's device; False where
    the checkpoint was written on another kind of device (a CUDA generator's state is 16 bytes, a
    CPU one's 5056), whose streams cannot go on here: the caller restarts them. torch's global
    (CPU) generator is restored either way."""
    torch.set_rng_state(state["torch"])
    if state["policy"].numel() != torch_gen.get_state().numel() or ("cuda" in state) != (torch_gen.device.type == "cuda"):
        return False
    torch_gen.set_state(state["policy"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], torch_gen.device)
    return True


def upgrade(state: dict) -> dict:
    """A checkpoint as this version lays it out, whichever version wrote it: the one place where
    earlier layouts convert (``_from_format_1``), and where a shipped model's compact learner is
    completed (ship.py leaves out the target actor, which equals the actor after the critics'
    warm-up)."""
    if "format" not in state:
        state = _from_format_1(state)
    elif state["format"] == 2:  # before discrete actions: every run's were continuous
        state = {**state, "format": FORMAT, "scaling": {**state["scaling"], "discrete": False}}
    for learner in state["ensemble"]["learners"]:
        td3 = learner.get("td3")
        if td3 is not None and "actor_target" not in td3:
            learner["td3"] = {**td3, "actor_target": learner["model"]}
    return state


def _from_format_1(state: dict) -> dict:
    """An earlier version's checkpoint (the lead learner and the normalizer at the top, the rest
    under ``extra``, the resume state as JSON strings) in this version's layout. What that version
    did not save yet takes the value its runs used."""
    extra = state.get("extra", {})
    learners = [{"lr_scale": 1.0, **learner} for learner in [state["learner"], *extra.get("ensemble", [])]]
    new = networks_state(state["spec"], {**{k: state[k] for k in Scaling.FIELDS}, "discrete": False}, learners,
                         int(extra.get("critic_pretrained", 0)))
    new["run"].update(online_steps=int(extra.get("online_steps", 0)), rounds=int(extra.get("rounds", 0)))
    rs = extra.get("resume")
    if rs is None:  # a checkpoint from before --resume, or a shipped model's: networks only
        return new
    new["ensemble"]["batch_rngs"] = [json.loads(rs["numpy_rng"]), *json.loads(rs.get("member_rngs", "[]"))]
    new["run"].update(command=rs["command"], phase=rs["phase"], pretrain_done=int(rs["pretrain_done"]),
                      metrics_bytes=int(rs["metrics_bytes"]), summary=json.loads(rs["summary"]),
                      last_eval=json.loads(rs.get("last_eval", "null")))
    new["generators"] = {"torch": rs["torch_rng"], "policy": rs["generator_rng"],
                         **({"cuda": rs["cuda_rng"]} if "cuda_rng" in rs else {})}
    new["safety"] = json.loads(rs["safety"]) if "safety" in rs else dict(SafetyNets.FRESH)
    if "target" in rs:  # absent before the adaptive targets: a fresh one is made at the next round
        new["target"] = json.loads(rs["target"])
    if "buffer_order" in rs:
        new["buffer"] = {"order": rs["buffer_order"],
                         **{k: rs[k] for k in ("online", "online_targets", "online_tasks") if k in rs}}
        n_online = int((rs["buffer_order"] < 0).sum())
        if n_online:  # before targets and tasks were kept: none known, one task
            new["buffer"].setdefault("online_targets", torch.full((n_online,), float("nan"), dtype=torch.float64))
            new["buffer"].setdefault("online_tasks", torch.zeros(n_online, dtype=torch.long))
    return new


def networks_state(spec: dict, scaling: dict, learners: list[dict], critic_pretrained: int = 0) -> dict:
    """A checkpoint of networks alone, with no run to resume: what `--init`, `odt eval` and a
    shipped model read (``critic_pretrained``: critic-only updates the critics have had)."""
    return {"format": FORMAT, "spec": spec, "scaling": scaling, "ensemble": {"learners": learners},
            "run": {"online_steps": 0, "rounds": 0, "critic_pretrained": critic_pretrained}}


def save_checkpoint(path: Path, state: dict) -> None:
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


def load_checkpoint(path: Path) -> dict:
    """One checkpoint file: read once, checked against its SHA-256 where it has one (checkpoints
    from before checksums have none), then unpickled with ``weights_only`` onto the CPU, wherever it
    was written: each component moves its state to its own device as it loads it, so a run moves
    between a GPU machine and a CPU one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}; give a run directory that holds checkpoints/")
    data = path.read_bytes()
    digest = Path(str(path) + ".sha256")
    if digest.is_file() and hashlib.sha256(data).hexdigest() != digest.read_text().strip():
        raise CorruptCheckpoint(f"checkpoint {path} does not match its checksum ({digest.name}): it is "
                                "corrupted; use another checkpoint of the run")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConfigError(f"refusing to load {path}: it is not a plain-tensor checkpoint "
                          "(loading it could run code); use a checkpoint written by odt") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ConfigError(f"cannot read checkpoint {path} ({str(e).splitlines()[0]}); "
                          "it is truncated or not an odt checkpoint") from e
    if not isinstance(state, dict) or "spec" not in state:
        raise ConfigError(f"{path} is not an odt checkpoint (no model spec in it); use a checkpoint written by odt")
    return upgrade(state)


def load_from_run(run_dir: Path, name: str = "final") -> tuple[dict, Path]:
    """A run directory's checkpoint by name (or a checkpoint file), else the most advanced one
    there; a checkpoint that fails its checksum gives way to its previous version, with a warning."""
    if Path(name).suffix == ".pt" and Path(name).is_file():
        return load_checkpoint(Path(name)), Path(name)
    ckpts = Path(run_dir) / "checkpoints"
    if not Path(run_dir).is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist; give the --out of an earlier run")
    corrupted = []
    for candidate in [name] + [n for n in ("final", "latest", "pretrained") if n != name]:
        for p in (ckpts / f"{candidate}.pt", _previous(ckpts / f"{candidate}.pt")):
            if not p.is_file():
                continue
            try:
                state = load_checkpoint(p)
            except CorruptCheckpoint:
                corrupted.append(str(p))
                continue
            if corrupted:
                print(f"odt: warning: {', '.join(corrupted)} failed its checksum; using {p}", file=sys.stderr)
            return state, p
    if corrupted:
        raise ConfigError(f"every checkpoint in {ckpts} failed its checksum ({', '.join(corrupted)}); "
                          "the run cannot be loaded")
    raise ConfigError(f"no checkpoint in {ckpts}: the run was stopped before it saved one; make it again with "
                      "the command that made it and --overwrite, or give another run")


def scaling_of(state: dict) -> Scaling:
    """A checkpoint's normalizer and action bounds."""
    saved = state["scaling"]
    scaling = Scaling.unit(len(saved["obs_mean"]), len(saved["act_low"]))
    scaling.load_state_dict(saved)
    return scaling


def build_model(spec: dict, device: str) -> DecisionTransformer:
    return DecisionTransformer(ModelSpec(**spec)).to(device)
