"""The Learner: one gradient step of any algorithm, and everything it must save."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ..config import OptimSettings, TD3Settings
from ..data.buffer import Batch
from ..models.heads import default_target_entropy
from ..models.transformer import DecisionTransformer
from .lamb import Lamb
from .guard import DivergenceGuard
from .losses import LOSSES, rl_term
from .meter import Meter
from .td3 import TD3Critic
from .temperature import Temperature


class Anchor:
    """Forgetting prevention: an L2 penalty of weight ``weight`` toward the weights the model had
    when the anchor was set, sum over tensors of mean((theta - theta_0)^2) (the tutorial's form, so
    tensors weigh alike whatever their size)."""

    def __init__(self, model: DecisionTransformer, weight: float):
        self.model = model
        self.weight = float(weight)
        self.params = [p.detach().clone() for p in model.parameters()]

    def loss(self) -> torch.Tensor:
        return sum(torch.mean((p - a) ** 2) for p, a in zip(self.model.parameters(), self.params))

    def state_dict(self) -> dict:
        return {"weight": self.weight, "params": [a.clone() for a in self.params]}

    def load_state_dict(self, state: dict) -> None:
        self.weight = float(state["weight"])
        self.params = [a.to(p.device) for a, p in zip(state["params"], self.model.parameters())]


class Learner:
    compile_backend = "inductor"  # tests check graph capture with aot_eager, which skips code generation

    def __init__(self, model: DecisionTransformer, loss: str, optim: OptimSettings, td3: TD3Settings | None = None,
                 *, precision: str = "fp32", compile: str = "off", snapshot_every: int = 100):
        """``loss``: the supervised part of the actor loss (dt or odt); ``optim``: the config's group;
        ``precision``: as setup resolved --precision (fp32 or bf16); ``compile``: --compile. The
        entropy's samples are the model's setting."""
        self.model = model
        self.loss_fn = LOSSES[loss]
        self.optim = optim
        self.precision = precision
        self.compile = compile
        self._compiled_fns: dict[str, Callable] = {}
        device = next(model.parameters()).device
        # The official LAMB: L2 decay folded into the Adam step before the trust ratio (lamb.py).
        self.optimizer = Lamb(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, eps=1e-8)
        # lr_scale: the loop's factor on top of the warmup (finetuning rate, decay, halving on rollback).
        self.lr_scale = 1.0
        warmup = max(optim.warmup_steps, 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min((step + 1) / warmup, 1.0) * self.lr_scale)
        self.scheduler.base_lrs = [float(optim.lr)]  # a float: the schedule then fills LAMB's rate tensor, no read
        self.anchor: Anchor | None = None  # forgetting prevention: toward the pretrained weights
        target_entropy = optim.target_entropy
        if target_entropy is None:
            target_entropy = default_target_entropy(model.spec.action_head, model.spec.act_dim)
        self.temperature = Temperature(optim.init_lambda, optim.lambda_lr, target_entropy, device)
        self.updates = 0  # actor updates: the warmup schedule and every log count these
        self.td3 = td3
        self.rl_active = True  # the loop turns the RL term off in pretraining unless asked
        self.critics = TD3Critic(model, td3, self._autocast) if td3 is not None else None
        self.meter = Meter()
        self._true = torch.ones((), dtype=torch.bool, device=device)
        self.guard = DivergenceGuard(self, optim.max_bad_updates, snapshot_every, device)

    @property
    def calls_per_actor_update(self) -> int:
        """``update`` calls that make one actor update (the critic steps on every call)."""
        return self.td3.policy_delay if self.td3 is not None else 1

    def set_lr_scale(self, scale: float) -> None:
        """Applies from the next update (the warmup schedule recomputes the rate then)."""
        self.lr_scale = float(scale)
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, lr in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"].fill_(lr * factor)

    def set_hyperparameters(self, lr: float, weight_decay: float, lambda_lr: float,
                            critic_lr: float | None = None) -> None:
        """This run's rates (LAMB's after warmup, the temperature's, the critics') and weight decay,
        over a loaded optimizer state, which would otherwise keep the pretraining run's."""
        self.scheduler.base_lrs = [lr for _ in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["weight_decay"] = weight_decay
        self.temperature.set_lr(lambda_lr)
        if self.critics is not None and critic_lr is not None:
            self.critics.set_lr(critic_lr)
        self.set_lr_scale(self.lr_scale)
        self.guard.snapshot()  # a rollback keeps this run's rates

    def set_anchor(self, reg_weight: float) -> None:
        """Penalise drift from the current weights (``Anchor``); a weight of 0 sets none."""
        self.anchor = Anchor(self.model, reg_weight) if reg_weight > 0 else None

    def reg_loss(self) -> torch.Tensor:
        return self.anchor.loss()

    def restore_weights(self, state: dict) -> None:
        """Roll back to an earlier learner state (networks, optimizers, lambda) while the counters
        and the warmup schedule keep going forward."""
        updates = self.updates
        scheduler = self.scheduler.state_dict()
        lr_scale = self.lr_scale
        critic_updates = self.critic_updates
        self.load_state_dict(state)
        self.updates = updates
        if self.critics is not None:
            self.critics.updates = critic_updates
        self.scheduler.load_state_dict(scheduler)
        self.set_lr_scale(lr_scale)
        self.guard.snapshot()

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.temperature.log_lambda.device.type, dtype=torch.bfloat16)
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

    def update(self, batch: Batch) -> None:
        """One critic step (TD3 algorithms), and an actor step every ``calls_per_actor_update``
        calls; their metrics go to ``meter``, which ``read`` empties."""
        if self.critics is not None:
            self._critic_step(batch)
            if not self.critics.targets_due:
                return
        self._actor_step(batch)
        if self.critics is not None:
            self.critics.soft_update()

    def critic_only_update(self, batch: Batch) -> None:
        """A critic step with the actor held (--critic-pretrain-updates); the targets' Polyak step
        every policy_delay critic steps, as TD3 takes it with each actor step."""
        self._critic_step(batch)
        if self.critics.targets_due:
            self.critics.soft_update()

    def read(self, reset: bool = True) -> dict[str, float]:
        """The metrics of the steps since the last read, each averaged over the steps that made it,
        in one copy to the host; the guard then judges the interval (``reset`` False: a look that
        leaves both as they are)."""
        metrics, (counts, worst) = self.meter.read(self.guard.device_state(), reset)
        if reset:
            metrics.update(self.guard.judge(counts, worst))
        return metrics

    def take_back(self, updates: int) -> None:
        """Actor updates the device skipped: the counters and the warmup's position, put right."""
        if updates:
            self.updates -= updates
            self.scheduler.last_epoch -= updates
            self.scheduler._step_count -= updates  # its state as if it had not stepped
            self.set_lr_scale(self.lr_scale)

    def _critic_step(self, batch: Batch) -> None:
        m = self.critics.update(batch, self._compiled("_critic_loss", self.critics.loss))
        finite = torch.isfinite(m["critic_loss"])
        self.meter.add(m, finite)
        self.guard.critic_step(finite)

    # A step never waits on the host (no .item(), float() or branch on a tensor's value), so that a
    # GPU runs it ahead of the host or captures it whole: a non-finite step is skipped on the device,
    # its metrics are summed there, and the host reads them once per interval (``read``).

    def _actor_loss(self, batch: Batch):
        """The actor's loss, its entropy (odt) and metrics: the forward half."""
        with self._autocast():
            hidden = self.model.hidden(batch.rtg, batch.states, batch.actions, batch.timesteps)
        # The head and the loss run in fp32: log-probabilities are sensitive to rounding.
        pred = self.model.head(hidden.float())
        loss, entropy, metrics = self.loss_fn(pred, batch, self.temperature.value, self.model.spec.entropy_samples)
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
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.grad_clip, foreach=True)
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
            metrics["lambda_ok"], metrics["lambda_value"] = self.temperature.step(entropy, (~ok).float())
        return metrics

    def _actor_step(self, batch: Batch) -> None:
        m = self._actor_update(batch)
        self.optimizer._opt_called = True
        applied = m.pop("ok")
        lam = m.pop("lambda_value", None)
        lambda_finite = m.pop("lambda_ok", self._true)
        # Assumed applied; the interval's read takes a skipped update back (``take_back``).
        self.scheduler.step()
        self.updates += 1
        m["lr"] = self.optimizer.param_groups[0]["lr"]  # the rate the schedule set for the next step
        if lam is not None:
            m["lambda"] = lam
        self.meter.add(m, applied & lambda_finite)
        self.guard.actor_step(torch.isfinite(m["loss"]), applied, lambda_finite)

    def state_dict(self) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), **self.temperature.state_dict(),
                 "updates": self.updates, "lr_scale": self.lr_scale}
        if self.anchor is not None:
            state["anchor"] = self.anchor.state_dict()
        if self.critics is not None:
            state["td3"] = self.critics.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.temperature.load_state_dict(state)
        if self.critics is not None:
            self._load_critics(state, self.critics.load_state_dict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.updates = int(state["updates"])
        self.lr_scale = float(state["lr_scale"])
        if "anchor" in state:
            self.anchor = Anchor(self.model, 0.0)
            self.anchor.load_state_dict(state["anchor"])
        self.guard.snapshot()  # a rollback returns to what was loaded, not to the fresh weights

    def load_networks(self, state: dict) -> None:
        """The networks of a learner's state (actor, lambda, critics and targets), not its optimizers
        or counters: a finetuning run that starts its own."""
        self.model.load_state_dict(state["model"])
        self.temperature.load_value(state)
        if self.critics is not None:
            self._load_critics(state, self.critics.load_networks)
        self.guard.snapshot()

    def _load_critics(self, state: dict, load: Callable[[dict], None]) -> None:
        """A state without critics (a dt or odt checkpoint) gives a TD3 learner fresh critics and a
        target actor equal to the loaded actor."""
        if "td3" in state:
            load(state["td3"])
        else:
            self.critics.follow_actor()
