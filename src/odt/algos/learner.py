"""The Learner: one gradient step of any algorithm, and everything it must save."""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import replace
from typing import Callable

import torch

from ..config import OptimSettings, TD3Settings
from ..data.buffer import Batch
from ..models.transformer import DecisionTransformer
from .lamb import Lamb
from .losses import LOSSES, rl_term, temperature_loss
from .td3 import TD3Critic


def _read(metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Every metric of a step in one device-to-host copy."""
    values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).tolist()
    return dict(zip(metrics, values))


def temperature_step(log_lambda: torch.Tensor, optimizer: torch.optim.Optimizer, entropy: torch.Tensor,
                     target_entropy: float, found_inf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ODT's dual step on lambda (eq. 7), skipped on the device with the actor's (``found_inf``);
    a non-finite result keeps the old lambda. Returns (finite, lambda)."""
    before = log_lambda.detach().clone()
    optimizer.zero_grad(set_to_none=True)
    temperature_loss(log_lambda, entropy, target_entropy).backward()
    optimizer.found_inf = found_inf
    optimizer.step()
    finite = torch.isfinite(log_lambda.detach())
    with torch.no_grad():
        log_lambda.copy_(torch.where(finite, log_lambda, before))
    return finite, log_lambda.detach().exp()


class Anchor:
    """Forgetting prevention: an L2 penalty of weight ``weight`` toward the weights the model had
    when the anchor was set, sum over tensors of mean((theta - theta_0)^2) (the tutorial's form, so
    tensors weigh alike whatever their size)."""

    def __init__(self, model: DecisionTransformer, weight: float, params: list[torch.Tensor] | None = None):
        self.model, self.weight = model, float(weight)
        self.params = [p.detach().clone() for p in (model.parameters() if params is None else params)]

    def loss(self) -> torch.Tensor:
        return sum(torch.mean((p - a) ** 2) for p, a in zip(self.model.parameters(), self.params))

    def state_dict(self) -> dict:
        return {"weight": self.weight, "params": [a.clone() for a in self.params]}

    @classmethod
    def from_state_dict(cls, model: DecisionTransformer, state: dict) -> "Anchor":
        device = next(model.parameters()).device
        return cls(model, state["weight"], [a.to(device) for a in state["params"]])


class Learner:
    compile_backend = "inductor"  # tests check graph capture with aot_eager, which skips code generation

    def __init__(self, model: DecisionTransformer, loss: str, optim: OptimSettings | None = None,
                 td3: TD3Settings | None = None, *, precision: str = "fp32", compile: str = "off",
                 snapshot_every: int = 100, **fields):
        """``loss``: the supervised part of the actor loss (dt or odt); ``optim``: the config's group,
        whose fields ``fields`` override one by one; ``precision``: as setup resolved --precision
        (fp32 or bf16); ``compile``: --compile. The entropy's samples are the model's setting."""
        s = replace(optim or OptimSettings(), **fields)
        lr, weight_decay, warmup_steps, max_bad_updates = s.lr, s.weight_decay, s.warmup_steps, s.max_bad_updates
        init_lambda, lambda_lr, target_entropy = s.init_lambda, s.lambda_lr, s.target_entropy
        self.model, self.loss_name = model, loss
        self.loss_fn = LOSSES[loss]
        self.grad_clip, self.entropy_samples, self.precision = s.grad_clip, model.spec.entropy_samples, precision
        self.compile = compile
        self._compiled_fns: dict[str, Callable] = {}
        device = next(model.parameters()).device
        # The official LAMB: L2 decay folded into the Adam step before the trust ratio (lamb.py).
        self.optimizer = Lamb(model.parameters(), lr=lr, weight_decay=weight_decay, eps=1e-8)
        # lr_scale: the loop's factor on top of the warmup (finetuning rate, decay, halving on rollback).
        self.lr_scale = 1.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min((step + 1) / max(warmup_steps, 1), 1.0) * self.lr_scale)
        self.scheduler.base_lrs = [float(lr)]  # a float: the schedule then fills LAMB's rate tensor, no read
        self.anchor: Anchor | None = None  # forgetting prevention: toward the pretrained weights
        self.target_entropy = -float(model.spec.act_dim) if target_entropy is None else float(target_entropy)
        self.log_lambda = torch.tensor(math.log(init_lambda), device=device, requires_grad=True)
        # fused: the one Adam that skips a step on the device (found_inf) on CPUs and GPUs alike.
        self.lambda_optimizer = torch.optim.Adam([self.log_lambda], lr=lambda_lr, betas=(0.9, 0.999), fused=True)
        self.updates = 0  # actor updates: the warmup schedule and every log count these
        self.td3 = td3
        self.rl_active = True  # the loop turns the RL term off in pretraining unless asked
        # Divergence guard: a non-finite loss, gradient or lambda skips the update; after
        # max_bad_updates in a row the learner returns to its last good state (a snapshot taken
        # every snapshot_every good actor updates). ``events`` holds what happened, for the log.
        self.max_bad_updates, self.snapshot_every = max_bad_updates, snapshot_every
        self.events: list[dict] = []
        self._bad = 0
        self.critics = TD3Critic(model, td3, self._autocast) if td3 is not None else None
        self._snapshot = copy.deepcopy(self.state_dict())

    @property
    def calls_per_actor_update(self) -> int:
        """``update`` calls that make one actor update (the critic steps on every call)."""
        return self.td3.policy_delay if self.td3 is not None else 1

    @property
    def lam(self) -> float:
        return float(self.log_lambda.detach().exp())

    def set_lr_scale(self, scale: float) -> None:
        """Applies from the next update (the warmup schedule recomputes the rate then)."""
        self.lr_scale = float(scale)
        base, factor = self.scheduler.base_lrs, self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, base):
            group["lr"].fill_(lr * factor)

    def set_hyperparameters(self, lr: float, weight_decay: float, lambda_lr: float,
                            critic_lr: float | None = None) -> None:
        """This run's rates (LAMB's after warmup, the temperature's, the critics') and weight decay,
        over a loaded optimizer state, which would otherwise keep the pretraining run's."""
        self.scheduler.base_lrs = [lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["weight_decay"] = weight_decay
        for group in self.lambda_optimizer.param_groups:
            group["lr"] = lambda_lr
        if self.critics is not None and critic_lr is not None:
            self.critics.set_lr(critic_lr)
        self.set_lr_scale(self.lr_scale)

    def set_anchor(self, reg_weight: float) -> None:
        """Penalise drift from the current weights (``Anchor``); a weight of 0 sets none."""
        self.anchor = Anchor(self.model, reg_weight) if reg_weight > 0 else None

    def reg_loss(self) -> torch.Tensor:
        return self.anchor.loss()

    def restore_weights(self, state: dict) -> None:
        """Roll back to an earlier learner state (networks, optimizers, lambda) while the counters
        and the warmup schedule keep going forward."""
        updates, scheduler, lr_scale = self.updates, self.scheduler.state_dict(), self.lr_scale
        critic_updates = self.critic_updates
        self.load_state_dict(state)
        self.updates = updates
        if self.critics is not None:
            self.critics.updates = critic_updates
        self.scheduler.load_state_dict(scheduler)
        self.set_lr_scale(lr_scale)
        self._snapshot = copy.deepcopy(self.state_dict())

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.log_lambda.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def critic_updates(self) -> int:
        return self.critics.updates if self.critics is not None else 0

    def _compiled(self, name: str, fn: Callable) -> Callable:
        """``fn`` (a part of a step's device half), through torch.compile where asked: one graph with
        no break allowed (``fullgraph``), so that a GPU can replay it whole."""
        if self.compile == "off":
            return fn
        if name not in self._compiled_fns:
            inductor = self.compile_backend == "inductor"
            self._compiled_fns[name] = torch.compile(
                fn, fullgraph=True, dynamic=False, backend=self.compile_backend,
                mode=None if self.compile == "default" or not inductor else self.compile)
        return self._compiled_fns[name]

    def update(self, batch: Batch) -> dict[str, float]:
        """One critic step (TD3 algorithms), and an actor step every ``calls_per_actor_update`` calls."""
        out: dict[str, float] = {}
        if self.critics is not None:
            out.update(self._critic_step(batch))
            if not self.critics.targets_due:
                return out
        actor = self._actor_step(batch)
        out.update(actor)
        if self.critics is not None and "loss" in actor:
            self.critics.soft_update(self.model)
        return out

    def _critic_step(self, batch: Batch) -> dict[str, float]:
        out = _read(self.critics.update(batch, self._compiled("_critic_loss", self.critics.loss)))
        if not math.isfinite(out["critic_loss"]):
            return self._skip("critic", "loss", out["critic_loss"])
        return out

    def critic_only_update(self, batch: Batch) -> dict[str, float]:
        """A critic step with the actor held (--critic-pretrain-updates); the targets' Polyak step
        every policy_delay critic steps, as TD3 takes it with each actor step."""
        out = self._critic_step(batch)
        if self.critics.targets_due:
            self.critics.soft_update(self.model)
        return out

    # Each step is two halves: the device's work (forward, backward, optimizer step, guards), which
    # never waits on the host (no .item(), float() or branch on a tensor's value), so that a GPU
    # can run it ahead or capture it whole; then one read of its metrics, and the bookkeeping.

    def _actor_loss(self, batch: Batch):
        """The actor's loss, its entropy (odt) and metrics: the forward half."""
        with self._autocast():
            hidden = self.model.hidden(batch.rtg, batch.states, batch.actions, batch.timesteps)
        # The head and the loss run in fp32: log-probabilities are sensitive to rounding.
        pred = self.model.head(hidden.float())
        loss, entropy, metrics = self.loss_fn(pred, batch, self.log_lambda.exp(), self.entropy_samples)
        if self.critics is not None and self.rl_active:
            mean_action = pred if isinstance(pred, torch.Tensor) else pred.mode()
            rl = rl_term(self.critics.q1(batch.states, mean_action.clamp(-1, 1)), batch.mask,
                         self.td3.rl_normalize)
            loss = loss + self.td3.rl_alpha * rl
            metrics["rl_loss"] = rl.detach()
        if self.anchor is not None:
            reg = self.reg_loss()
            loss = loss + self.anchor.weight * reg
            metrics["reg_loss"] = reg.detach()
        return loss, entropy, metrics

    def _actor_apply(self, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clipping and LAMB's step on the gradients of ``loss``, skipped on the device where the
        loss or the gradient norm is not finite. Returns (gradient norm, finite)."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
        ok = torch.isfinite(loss) & torch.isfinite(grad_norm)
        self.optimizer.found_inf = (~ok).float()
        # LAMB's own step: the scheduler wraps ``step`` (to warn on misuse) in a file dynamo will
        # not trace; ``_actor_step`` sets the flag that wrapper would.
        type(self.optimizer).step(self.optimizer)
        return grad_norm, ok

    def _actor_update(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The actor's gradient step on the device. A non-finite loss or gradient norm leaves the
        weights and moments unchanged (``found_inf``); a non-finite lambda keeps the old one."""
        self.model.train()
        loss, entropy, metrics = self._compiled("_actor_loss", self._actor_loss)(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss = loss.detach()
        grad_norm, ok = self._compiled("_actor_apply", self._actor_apply)(loss)
        metrics.update(loss=loss, grad_norm=grad_norm, ok=ok)
        if entropy is not None:
            metrics["lambda_ok"], metrics["lambda_value"] = temperature_step(
                self.log_lambda, self.lambda_optimizer, entropy, self.target_entropy, (~ok).float())
        return metrics

    def _actor_step(self, batch: Batch) -> dict[str, float]:
        out = _read(self._actor_update(batch))
        self.optimizer._opt_called = True
        if not out.pop("ok"):
            if not math.isfinite(out["loss"]):
                return self._skip("actor", "loss", out["loss"])
            return self._skip("actor", "gradient norm", out["grad_norm"])
        self.scheduler.step()
        self.updates += 1
        lam = out.pop("lambda_value", None)
        if not out.pop("lambda_ok", True):
            return self._skip("actor", "lambda", lam)  # the policy step itself was taken
        self._bad = 0
        if self.updates % self.snapshot_every == 0:
            self._snapshot = copy.deepcopy(self.state_dict())
        out["lr"] = self.scheduler.base_lrs[0] * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)  # no read
        if lam is not None:
            out["lambda"] = lam
        return out

    def _skip(self, part: str, what: str, value: float) -> dict[str, float]:
        """A non-finite update is not applied; enough of them in a row roll the learner back."""
        self._bad += 1
        self.events.append({"event": "skipped_update", "part": part, "reason": f"non-finite {what}",
                            "value": str(value), "in_a_row": self._bad})
        if self._bad < self.max_bad_updates:
            return {"skipped": 1.0}
        self.load_state_dict(copy.deepcopy(self._snapshot))
        self.events.append({"event": "rollback", "reason": f"{self._bad} non-finite updates in a row",
                            "to_updates": self.updates})
        self._bad = 0
        return {"skipped": 1.0, "rollback": 1.0}

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "log_lambda": self.log_lambda.detach().clone(),
                 "lambda_optimizer": self.lambda_optimizer.state_dict(), "updates": self.updates,
                 "lr_scale": self.lr_scale}
        if self.anchor is not None:
            state["anchor"] = self.anchor.state_dict()
        if self.critics is not None:
            state["td3"] = self.critics.state_dict()
        return state

    def load_state_dict(self, state: dict, model_only: bool = False) -> None:
        """``model_only``: the networks (actor, lambda, critics and targets where saved), not the
        optimizers: a finetuning run starts its own. A checkpoint without critics (dt, odt) gives
        a TD3 learner a fresh critic and a target actor equal to the loaded actor."""
        self.model.load_state_dict(state["model"])
        with torch.no_grad():
            self.log_lambda.copy_(state["log_lambda"])
        if self.critics is not None:
            self.critics.load_state_dict(state.get("td3"), self.model, weights_only=model_only)
        if model_only:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.lambda_optimizer.load_state_dict(state["lambda_optimizer"])
        self.updates = int(state["updates"])
        self.lr_scale = float(state.get("lr_scale", 1.0))
        if "anchor" in state:
            self.anchor = Anchor.from_state_dict(self.model, state["anchor"])
