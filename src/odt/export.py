"""`odt export`: a run's policy as one file that runs without odt (TorchScript or ONNX), or as a
Hugging Face DecisionTransformerModel directory (``--format hf``, odt.hf).

The exported graph is a pure function of one control step, so that ONNX (which has no mutable
state) and TorchScript share it and a user's loop owns the state:

    action, states, actions, rtg, t = policy(obs, reward, target_return, states, actions, rtg, t)

obs (n, obs_dim) in the environment's units (a goal environment's observation flattened as
``observation``, then ``desired_goal``); reward (n,), the previous action's reward (ignored at
t = 0); target_return (n,), read at t = 0; states (n, C, obs_dim), actions (n, C, act_dim) and
rtg (n, C, 1), the context windows, zeros at the start of an episode; all float32; t (n,) int64,
each row's step count, zero at the start. The action comes back in the environment's units (with
discrete actions: its index, int64, the most probable one's; act_dim is then the number of actions,
and ``actions`` holds one-hot vectors). Rows are independent: an episode that ends is restarted by
zeroing its row and its t.

It computes what ``Policy.act`` computes, the mean action (the average of the members' for an
ensemble): the window is left-aligned with later slots left at zero, which causal attention
hides from the current step, so the full fixed-size window gives the prediction of the
shorter one that ``Policy`` feeds the model.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro
from torch import nn

from . import hf, hf_export
from .checkpoint import scaling_of
from .config import Config, ConfigError
from .envs.make import scale_actions_from_unit
from .models.transformer import positions
from .policy import load_models
from .scaling import Scaling

INPUTS = ["obs", "reward", "target_return", "states", "actions", "rtg", "t"]
OUTPUTS = ["action", "next_states", "next_actions", "next_rtg", "next_t"]


class ExportedPolicy(nn.Module):
    def __init__(self, models: list[nn.Module], scaling: Scaling, rtg_scale: float, context: int):
        super().__init__()
        self.models = nn.ModuleList(models)
        for name in Scaling.FIELDS:  # buffers: the exported file carries them
            self.register_buffer(name, torch.as_tensor(getattr(scaling, name), dtype=torch.float32).clone())
        self.discrete = scaling.discrete  # fixed when traced: the step returns an action's index
        self.rtg_scale, self.context = float(rtg_scale), int(context)

    def forward(self, obs, reward, target_return, states, actions, rtg, t):
        C = self.context
        slots = positions(states)
        full = (t >= C)[:, None, None]
        # A full window drops its oldest step; the new one goes to slot p = min(t, C - 1).
        states, actions, rtg = (torch.where(full, torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], 1), x)
                                for x in (states, actions, rtg))
        p = t.clamp(max=C - 1)
        here = (slots[None, :] == p[:, None]).unsqueeze(-1).float()  # (n, C, 1)
        before = (slots[None, :] == (p - 1)[:, None]).unsqueeze(-1).float()
        g_prev = (rtg * before).sum(1)  # (n, 1)
        g = torch.where(t[:, None] == 0, target_return[:, None] / self.rtg_scale,
                        g_prev - reward[:, None] / self.rtg_scale)
        s = (obs - self.obs_mean) / self.obs_std
        states = states * (1 - here) + s[:, None, :] * here
        rtg = rtg * (1 - here) + g[:, None, :] * here
        timesteps = slots[None, :] + (t - p)[:, None]
        a = torch.stack([self._mean_action(m, rtg, states, actions, timesteps, here) for m in self.models]).mean(0)
        actions = actions * (1 - here) + a[:, None, :] * here
        out = a.argmax(-1) if self.discrete else scale_actions_from_unit(a, self.act_low, self.act_high)
        return out, states, actions, rtg, t + 1

    @staticmethod
    def _mean_action(model, rtg, states, actions, timesteps, here):
        h = (model.hidden(rtg, states, actions, timesteps) * here).sum(1)  # the state token at slot p
        out = model.head(h)
        return (out.mode() if model.stochastic else out).clamp(-1, 1)


@dataclass
class ExportArgs:
    run: Annotated[Path, tyro.conf.Positional]
    """Run directory whose policy to export, or odt:NAME, a shipped model."""
    out: Path
    """File to write (.pt for TorchScript, .onnx for ONNX by convention); a directory for hf."""
    format: Literal["torchscript", "onnx", "hf"] = "torchscript"
    """torchscript (torch.jit.load, needs only torch), onnx (onnxruntime, needs no torch) or hf (a
    transformers DecisionTransformerModel directory with a model card: docs/huggingface.md)."""
    checkpoint: str = "final"
    """Checkpoint name in the run's checkpoints/ (final, best, pretrained) or a file path."""
    overwrite: bool = False
    """Replace --out if it exists."""


def exported_policy(run_dir: Path, cfg: Config, checkpoint: str = "final") -> tuple[ExportedPolicy, dict]:
    """The run's policy as an ExportedPolicy in eval mode, and the metadata stored beside it."""
    models, state, path = load_models(run_dir, checkpoint, "cpu")
    spec = state["spec"]
    policy = ExportedPolicy(models, scaling_of(state), cfg.rtg_scale, cfg.eval_context).eval()
    meta = {"env": cfg.env, "algo": cfg.algo, "obs_dim": spec["obs_dim"], "act_dim": spec["act_dim"],
            "context": cfg.eval_context, "rtg_scale": cfg.rtg_scale, "g_eval": cfg.g_eval,
            "inputs": INPUTS, "outputs": OUTPUTS, "run": str(run_dir), "checkpoint": str(path)}
    return policy, meta


def example_inputs(meta: dict, n: int = 1) -> tuple[torch.Tensor, ...]:
    C, S, A = meta["context"], meta["obs_dim"], meta["act_dim"]
    return (torch.zeros(n, S), torch.zeros(n), torch.full((n,), float(meta["g_eval"])), torch.zeros(n, C, S),
            torch.zeros(n, C, A), torch.zeros(n, C, 1), torch.zeros(n, dtype=torch.int64))


def export_command(a: ExportArgs) -> int:
    if hf.is_model_dir(a.run):
        raise ConfigError(f"{a.run} is a Hugging Face model directory, not an odt run; odt eval --run, Policy.load and "
                          "odt finetune --init take it as it is")
    if not (a.run / "config.json").is_file():
        raise ConfigError(f"{a.run} is not a run directory (no config.json); give the --out of an odt run")
    if a.out.exists() and not a.overwrite:
        raise ConfigError(f"{a.out} exists; choose another --out or pass --overwrite")
    if not a.out.parent.is_dir():
        raise ConfigError(f"the directory of --out, {a.out.parent}, does not exist; create it first")
    cfg = Config.load(a.run / "config.json")
    if cfg.tasks or cfg.baseline:
        raise ConfigError(f"{a.run} is a {'multi-task' if cfg.tasks else cfg.algo + ' baseline'} run; odt export "
                          "takes single-task transformer runs")
    if a.format == "hf":
        return hf_export.export_run(a.run, cfg, *load_models(a.run, a.checkpoint, "cpu"), a.out)
    if a.format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise ConfigError("ONNX export needs the optional extra: pip install 'odt[export]'") from None
    policy, meta = exported_policy(a.run, cfg, a.checkpoint)
    tmp = a.out.with_name(a.out.name + ".tmp")  # a failed export leaves an existing --out as it was
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and the tracer's notes are not the user's
            if a.format == "torchscript":
                traced = torch.jit.trace(policy, example_inputs(meta, 2), check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={"odt.json": json.dumps(meta)})
            else:
                export_onnx(policy, meta, tmp)
        tmp.replace(a.out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {a.out} ({a.format}, {a.out.stat().st_size / 1e6:.1f} MB): {meta['env']}, context "
          f"{meta['context']}, obs {meta['obs_dim']}, actions {meta['act_dim']}, g_eval {meta['g_eval']:g}")
    return 0


def export_onnx(policy: ExportedPolicy, meta: dict, path: Path) -> None:
    import onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # its notes on torchvision's absent ops

    n = torch.export.Dim("n", min=1)
    batch = {0: n}
    program = torch.onnx.export(policy, example_inputs(meta, 2), input_names=INPUTS, output_names=OUTPUTS,
                                dynamic_shapes=tuple(batch for _ in INPUTS), dynamo=True, verbose=False)
    program.save(str(path))
    model = onnx.load(str(path))
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))

