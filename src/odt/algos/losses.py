"""The algorithms' losses as small pure functions of (prediction, batch, temperature).

Each returns (policy loss, entropy or None, metrics). The entropy it returns is the one the
dual (temperature) loss uses.
"""
from __future__ import annotations

import torch

from ..data.buffer import Batch
from ..models.heads import ActionDist, Categorical


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, T) over the positions where mask (B, T) is 1."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def dt_loss(pred: torch.Tensor | Categorical, batch: Batch, lam: torch.Tensor | None = None, entropy_samples: int = 1):
    """DT: mean squared error over valid positions and action dimensions; with discrete actions (a
    categorical head), the cross-entropy of the data's actions, over valid positions."""
    if isinstance(pred, Categorical):
        nll = masked_mean(-pred.log_prob(batch.actions), batch.mask)
        return nll, None, {"nll": nll.detach()}
    se = (pred - batch.actions).pow(2).mean(-1)
    loss = masked_mean(se, batch.mask)
    return loss, None, {"mse": loss.detach()}


def odt_loss(pred: ActionDist | Categorical, batch: Batch, lam: torch.Tensor, entropy_samples: int = 1):
    """ODT (eq. 6): NLL - lambda * H, both averaged over valid positions only (H exact for a
    categorical; mse: of its most probable action's one-hot vector)."""
    nll = masked_mean(-pred.log_prob(batch.actions), batch.mask)
    entropy = masked_mean(pred.entropy(entropy_samples), batch.mask)
    loss = nll - lam.detach() * entropy
    mse = masked_mean((pred.mode() - batch.actions).pow(2).mean(-1), batch.mask)
    return loss, entropy, {"nll": nll.detach(), "entropy": entropy.detach(), "mse": mse.detach()}


def temperature_loss(log_lambda: torch.Tensor, entropy: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """ODT (eq. 7): lambda * (H - beta), minimised over lambda = exp(log_lambda) with H fixed."""
    return log_lambda.exp() * (entropy.detach() - target_entropy)


def td3_target(rewards: torch.Tensor, terminals: torch.Tensor, q1_next: torch.Tensor, q2_next: torch.Tensor,
               gamma: float) -> torch.Tensor:
    """TD3: y = r + gamma * (1 - terminated) * min(Q1', Q2'). Truncation is not termination."""
    return rewards + gamma * (1.0 - terminals) * torch.minimum(q1_next, q2_next)


def critic_loss(q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Both critics' squared TD errors, averaged over the positions that have a target."""
    return masked_mean((q1 - target).pow(2) + (q2 - target).pow(2), mask)


def rl_term(q1: torch.Tensor, mask: torch.Tensor, normalize: bool) -> torch.Tensor:
    """ViDT's actor term: the mean of -Q1(s, a_mean) over valid positions, optionally divided by
    the (not differentiated) mean |Q| so that its scale does not depend on the reward's."""
    term = -masked_mean(q1, mask)
    if normalize:
        term = term / masked_mean(q1.abs(), mask).detach().clamp_min(1e-6)
    return term


LOSSES = {"dt": dt_loss, "odt": odt_loss}
