"""Action heads and the math of their distributions.

Every function returns per-position values of shape (B, T); masking and averaging happen in
the losses, so a padded position can never leak into a mean.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LOG_2PI = math.log(2 * math.pi)
# Actions in the data sit exactly on the bounds; atanh(+-1) is infinite.
TANH_EPS = 1e-6


class ActionDist:
    """A diagonal Gaussian over pre-squash actions, optionally followed by tanh."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor, squashed: bool):
        self.mean, self.log_std, self.squashed = mean, log_std, squashed

    def sample(self, generator: torch.Generator | None) -> torch.Tensor:
        """An exploration action in the [-1, 1] box, drawn from ``generator``."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device)
        u = self.mean + self.std * eps
        return torch.tanh(u) if self.squashed else u.clamp(-1, 1)

    @property
    def std(self) -> torch.Tensor:
        return self.log_std.exp()

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """log pi(a), summed over action dimensions."""
        if not self.squashed:
            return gaussian_log_prob(action, self.mean, self.log_std)
        action = action.clamp(-1 + TANH_EPS, 1 - TANH_EPS)
        u = torch.atanh(action)
        return gaussian_log_prob(u, self.mean, self.log_std) - tanh_log_det(u)

    def rsample(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample(s) and their log-probability (computed from the pre-squash value,
        which is exact where atanh of the squashed value would lose precision)."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        u = self.mean + self.std * torch.randn(shape, dtype=self.mean.dtype, device=self.mean.device)
        logp = gaussian_log_prob(u, self.mean, self.log_std)
        if self.squashed:
            return torch.tanh(u), logp - tanh_log_det(u)
        return u, logp

    def entropy(self, samples: int = 1) -> torch.Tensor:
        """Analytic for the Gaussian; Monte Carlo over ``samples`` draws for the squashed one."""
        if not self.squashed:
            return gaussian_entropy(self.log_std)
        _, logp = self.rsample(samples)
        return -logp.mean(0)

    def mode(self) -> torch.Tensor:
        """The action used for evaluation: the (squashed) mean."""
        return torch.tanh(self.mean) if self.squashed else self.mean


class Categorical:
    """A categorical over n discrete actions. An action is the one-hot vector of its index, as the
    data, the replay buffer and the model's action tokens carry it (a linear embedding of a one-hot
    vector is the embedding of its index); the environment gets the index (Scaling.from_unit)."""

    squashed = False

    def __init__(self, logits: torch.Tensor):
        self.logits = logits
        self.log_p = logits.log_softmax(-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """log pi(a) of one-hot actions."""
        return (self.log_p * action).sum(-1)

    def entropy(self, samples: int = 1) -> torch.Tensor:
        """Exact: -sum_a pi(a) log pi(a) (``samples`` is the Gaussian's Monte Carlo, not needed here)."""
        return -(self.log_p.exp() * self.log_p).sum(-1)

    def mode(self) -> torch.Tensor:
        """The most probable action, one-hot (made from the logits: a traced export keeps no device)."""
        return torch.zeros_like(self.logits).scatter_(-1, self.logits.argmax(-1, keepdim=True), 1.0)

    def sample(self, generator: torch.Generator | None) -> torch.Tensor:
        """An action drawn from pi, one-hot: the inverse of the CDF at a uniform draw from ``generator``."""
        u = torch.rand((*self.logits.shape[:-1], 1), generator=generator, device=self.logits.device)
        index = (self.log_p.exp().cumsum(-1) < u).sum(-1, keepdim=True).clamp(max=self.logits.shape[-1] - 1)
        return torch.zeros_like(self.logits).scatter_(-1, index, 1.0)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * LOG_2PI).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """sum log(1 - tanh(u)^2), in the overflow-free form 2 (log 2 - u - softplus(-2u))."""
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


class DeterministicHead(nn.Module):
    """DT's head: a linear layer and tanh onto the normalized action box."""

    def __init__(self, hidden: int, act_dim: int):
        super().__init__()
        self.linear = nn.Linear(hidden, act_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(h))


class GaussianHead(nn.Module):
    """Mean and log-std from two linear layers (the paper), log-std squashed into its bounds."""

    def __init__(self, hidden: int, act_dim: int, log_std_min: float, log_std_max: float, squashed: bool):
        super().__init__()
        self.mu = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)
        self.log_std_min, self.log_std_max, self.squashed = log_std_min, log_std_max, squashed

    def forward(self, h: torch.Tensor) -> ActionDist:
        # A smooth bound keeps gradients alive at the limits, unlike clamp.
        t = torch.tanh(self.log_std(h))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (t + 1)
        return ActionDist(self.mu(h), log_std, self.squashed)


class CategoricalHead(nn.Module):
    """Discrete actions: the logits of the n actions from one linear layer."""

    def __init__(self, hidden: int, n_actions: int):
        super().__init__()
        self.logits = nn.Linear(hidden, n_actions)

    def forward(self, h: torch.Tensor) -> Categorical:
        return Categorical(self.logits(h))


# A categorical's entropy lies in [0, log n]; ODT's temperature holds it above this share of log n
# (the Gaussian actors' default is the paper's -dim(A)).
CATEGORICAL_ENTROPY_SHARE = 0.5


def default_target_entropy(kind: str, act_dim: int) -> float:
    """beta, the entropy the temperature holds the policy's above, where --target-entropy is not given."""
    return CATEGORICAL_ENTROPY_SHARE * math.log(act_dim) if kind == "categorical" else -float(act_dim)


def make_head(kind: str, hidden: int, act_dim: int, log_std_min: float, log_std_max: float) -> nn.Module:
    if kind == "deterministic":
        return DeterministicHead(hidden, act_dim)
    if kind == "categorical":
        return CategoricalHead(hidden, act_dim)
    if kind in ("gaussian", "tanh_gaussian"):
        return GaussianHead(hidden, act_dim, log_std_min, log_std_max, squashed=kind == "tanh_gaussian")
    raise ValueError(f"unknown action head {kind!r}")
