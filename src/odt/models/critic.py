"""Twin Markov critics Q(s, a) for the TD3 term of ViDT."""
from __future__ import annotations

import torch
from torch import nn


def _mlp(inp: int, hidden: int, layernorm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(2):
        layers.append(nn.Linear(inp if i == 0 else hidden, hidden))
        if layernorm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(nn.ReLU())
    layers.append(nn.Linear(hidden, 1))
    return nn.Sequential(*layers)


class TwinCritic(nn.Module):
    """Two independent MLPs (two hidden layers, ReLU, optional LayerNorm) on normalized states
    and actions in [-1, 1]; TD3 takes the smaller of their target values."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, layernorm: bool = False):
        super().__init__()
        self.q1 = _mlp(obs_dim + act_dim, hidden, layernorm)
        self.q2 = _mlp(obs_dim + act_dim, hidden, layernorm)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([states, actions], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def q1_only(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.q1(torch.cat([states, actions], dim=-1)).squeeze(-1)


def critic_shape(state: dict) -> tuple[int, bool]:
    """The hidden width and LayerNorm of the TwinCritic whose state dict this is."""
    return int(state["q1.0.weight"].shape[0]), "q1.1.weight" in state
