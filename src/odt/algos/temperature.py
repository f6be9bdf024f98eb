"""ODT's learned temperature lambda (eq. 7): log lambda, its Adam, and the entropy target it holds
the policy's entropy to."""
from __future__ import annotations

import math

import torch

from .losses import temperature_loss


class Temperature:
    def __init__(self, init_lambda: float, lr: float, target_entropy: float, device: torch.device):
        self.target_entropy = float(target_entropy)
        self.log_lambda = torch.tensor(math.log(init_lambda), device=device, requires_grad=True)
        # fused: the one Adam that skips a step on the device (found_inf) on CPUs and GPUs alike.
        self.optimizer = torch.optim.Adam([self.log_lambda], lr=lr, betas=(0.9, 0.999), fused=True)

    @property
    def value(self) -> torch.Tensor:
        """lambda, on the device, for the actor's loss."""
        return self.log_lambda.exp()

    @property
    def lam(self) -> float:
        return float(self.log_lambda.detach().exp())

    def step(self, entropy: torch.Tensor, found_inf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The dual step on lambda, skipped on the device with the actor's (``found_inf``); a
        non-finite result keeps the old lambda. Returns (finite, lambda)."""
        before = self.log_lambda.detach().clone()
        self.optimizer.zero_grad(set_to_none=True)
        temperature_loss(self.log_lambda, entropy, self.target_entropy).backward()
        self.optimizer.found_inf = found_inf
        self.optimizer.step()
        finite = torch.isfinite(self.log_lambda.detach())
        with torch.no_grad():
            self.log_lambda.copy_(torch.where(finite, self.log_lambda, before))
        return finite, self.log_lambda.detach().exp()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # The learner's checkpoint keeps these two keys at its own level (log_lambda, lambda_optimizer).
    def state_dict(self) -> dict:
        return {"log_lambda": self.log_lambda.detach().clone(), "lambda_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.load_value(state)
        self.optimizer.load_state_dict(state["lambda_optimizer"])

    def load_value(self, state: dict) -> None:
        """lambda alone, without its optimizer's moments (a finetuning run that restarts them)."""
        with torch.no_grad():
            self.log_lambda.copy_(state["log_lambda"])
