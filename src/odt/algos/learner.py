"""The Learner: one gradient step of any algorithm, and everything it must save."""
from __future__ import annotations

import contextlib
import math

import torch
from pytorch_optimizer import Lamb

from ..data.buffer import Batch
from ..models.transformer import DecisionTransformer
from .losses import LOSSES, temperature_loss


class Learner:
    def __init__(self, model: DecisionTransformer, algo: str, *, lr: float, weight_decay: float,
                 warmup_steps: int, grad_clip: float, init_lambda: float = 0.1, lambda_lr: float = 1e-4,
                 target_entropy: float | None = None, entropy_samples: int = 1, precision: str = "fp32"):
        self.model, self.algo = model, algo
        self.loss_fn = LOSSES[algo]
        self.grad_clip, self.entropy_samples, self.precision = grad_clip, entropy_samples, precision
        device = next(model.parameters()).device
        # The reference uses LAMB with L2 decay folded into the update before the trust ratio.
        self.optimizer = Lamb(model.parameters(), lr=lr, weight_decay=weight_decay,
                              weight_decouple=False, eps=1e-8)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min((step + 1) / max(warmup_steps, 1), 1.0))
        self.target_entropy = -float(model.spec.act_dim) if target_entropy is None else float(target_entropy)
        self.log_lambda = torch.tensor(math.log(init_lambda), device=device, requires_grad=True)
        self.lambda_optimizer = torch.optim.Adam([self.log_lambda], lr=lambda_lr, betas=(0.9, 0.999))
        self.updates = 0

    @property
    def lam(self) -> float:
        return float(self.log_lambda.detach().exp())

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.log_lambda.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def update(self, batch: Batch) -> dict[str, float]:
        self.model.train()
        with self._autocast():
            hidden = self.model.hidden(batch.rtg, batch.states, batch.actions, batch.timesteps)
        # The head and the loss run in fp32: log-probabilities are sensitive to rounding.
        pred = self.model.head(hidden.float())
        loss, entropy, metrics = self.loss_fn(pred, batch, self.log_lambda.exp(), self.entropy_samples)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if entropy is not None:
            lambda_loss = temperature_loss(self.log_lambda, entropy, self.target_entropy)
            self.lambda_optimizer.zero_grad(set_to_none=True)
            lambda_loss.backward()
            self.lambda_optimizer.step()
        self.updates += 1
        out = {k: float(v) for k, v in metrics.items()}
        out.update(loss=float(loss.detach()), grad_norm=float(grad_norm), lr=self.scheduler.get_last_lr()[0])
        if entropy is not None:
            out["lambda"] = self.lam
        return out

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "log_lambda": self.log_lambda.detach().clone(),
                "lambda_optimizer": self.lambda_optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict, model_only: bool = False) -> None:
        self.model.load_state_dict(state["model"])
        with torch.no_grad():
            self.log_lambda.copy_(state["log_lambda"])
        if model_only:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.lambda_optimizer.load_state_dict(state["lambda_optimizer"])
        self.updates = int(state["updates"])
