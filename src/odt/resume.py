"""The resume state of a run, saved in every checkpoint: what `--resume` needs beyond the learner
(counters, random generators, the summary so far, the length of metrics.jsonl, the safety nets,
the return target and the online buffer), so that a resumed run writes the metrics.jsonl of one
that was never stopped."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import torch

from .data.buffer import ReplayBuffer
from .schedules import ReturnTarget

if TYPE_CHECKING:  # the Trainer saves through this module: a type, not an import at run time
    from .train import Trainer


def encode(t: Trainer) -> dict:
    t.logger.metrics.flush()
    state = {"command": t.command, "phase": t.phase, "pretrain_done": t.pretrain_done,
             "numpy_rng": json.dumps(t.rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
             "generator_rng": t.torch_gen.get_state(), "summary": json.dumps(t.summary),
             "metrics_bytes": t.logger.metrics.tell(), "safety": t.safety.encode(),
             "last_eval": json.dumps(t.last_eval), "member_rngs": json.dumps(t.ensemble.rng_states())}
    if torch.device(t.device).type == "cuda":  # dropout's masks on a GPU come from its own generator
        state["cuda_rng"] = torch.cuda.get_rng_state(t.device)
    if t.target is not None:
        state["target"] = json.dumps(t.target.state())
    if t.buffer is not None:
        state.update(t.buffer.encode(t.dataset.episodes))
    return state


def restore(t: Trainer, checkpoint: dict) -> None:
    """The counterpart of ``encode``, on a Trainer built from the run's own config."""
    extra = checkpoint["extra"]
    rs = extra["resume"]
    t.online_steps, t.rounds = int(extra["online_steps"]), int(extra["rounds"])
    t.command, t.phase, t.pretrain_done = rs["command"], rs["phase"], int(rs["pretrain_done"])
    t.rng.bit_generator.state = json.loads(rs["numpy_rng"])
    # Generator states are CPU byte tensors wherever the checkpoint was mapped (a GPU run maps there).
    torch.set_rng_state(rs["torch_rng"].cpu())
    t.torch_gen.set_state(rs["generator_rng"].cpu())
    if "cuda_rng" in rs and torch.device(t.device).type == "cuda":
        torch.cuda.set_rng_state(rs["cuda_rng"].cpu(), t.device)
    t.summary = json.loads(rs["summary"])
    # Checkpoints from before the toolbox lack its entries: their defaults are what those runs used.
    if "safety" in rs:
        t.safety.restore(rs["safety"])
    t.last_eval = json.loads(rs.get("last_eval", "null"))
    t.ensemble.load_members(extra.get("ensemble", []), json.loads(rs.get("member_rngs", "[]")))
    if "target" in rs:
        t.target = ReturnTarget.for_config(t.cfg)
        t.target.load(json.loads(rs["target"]))
    if "buffer_order" in rs:
        t.buffer = ReplayBuffer.for_config(t.cfg, t.cfg.buffer_size, t.obs_mean, t.obs_std)
        t.buffer.restore(rs, t.dataset.episodes)
