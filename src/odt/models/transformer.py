"""The Decision Transformer: a causal GPT over interleaved (return-to-go, state, action) tokens.

Windows are right-padded. With causal attention a valid token never attends to a later
(padded) one, so no padding mask is needed inside attention: the fused ``is_causal`` kernel
serves every batch, and only the losses look at the mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .heads import make_head


@dataclass
class ModelSettings:
    """The transformer and its action head."""

    embed_dim: int = 512
    """Transformer embedding size."""
    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block."""
    dropout: float = 0.1
    """Dropout in embeddings, attention and MLP."""
    context_len: int = 20
    """Training context K (timesteps; the transformer sees 3K tokens)."""
    eval_context: int = 5
    """Context length used when acting; acting costs what this length costs, not K."""
    timestep_embedding: bool = False
    """Add a learned absolute timestep embedding (the paper uses it for AntMaze, not Gym)."""
    max_ep_len: int = 1000
    """Largest timestep the timestep embedding can represent."""
    action_head: Literal["auto", "deterministic", "gaussian", "tanh_gaussian", "categorical"] = "auto"
    """auto: deterministic for dt, tanh_gaussian for odt; categorical for both where the environment's
    actions are discrete (the only head for them)."""
    log_std_min: float = -5.0
    """Lower bound of the policy log standard deviation."""
    log_std_max: float = 2.0
    """Upper bound of the policy log standard deviation."""
    entropy_samples: int = 1
    """Monte Carlo samples per position for the entropy of the tanh-squashed Gaussian."""


@dataclass(kw_only=True)
class ModelSpec(ModelSettings):
    """One network's architecture: the settings, the data's dimensions, and a resolved action head
    (``auto``, which the config resolves by algorithm, means the stochastic actor here)."""

    obs_dim: int
    act_dim: int
    frames: tuple[int, ...] = ()  # (C, H, W) of stacked frames, read by convolutions; () for a flat state

    def __post_init__(self):
        if self.action_head == "auto":
            self.action_head = "tanh_gaussian"
        self.frames = tuple(self.frames)  # a checkpoint's spec may hold a list


class FrameEncoder(nn.Module):
    """Stacked frames into a state token: the DT paper's Atari encoder (the Nature DQN's three
    convolutions, then a linear layer and tanh), over flattened rows of (C, H, W) in [0, 1]."""

    def __init__(self, frames: tuple[int, ...], d: int):
        super().__init__()
        self.frames = frames
        self.conv = nn.Sequential(nn.Conv2d(frames[0], 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2),
                                  nn.ReLU(), nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            width = self.conv(torch.zeros(1, *frames)).shape[1]  # 3136 for 84x84
        self.out = nn.Sequential(nn.Linear(width, d), nn.Tanh())

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation, as the other token embeddings keep."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        lead = states.shape[:-1]
        return self.out(self.conv(states.reshape(-1, *self.frames))).reshape(*lead, -1)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with the CPU's mask drawn 16 random bits per element (p rounded to 1/65536).

    Why: CPU dropout draws one Bernoulli per element from a 32-bit generator, and that draw was
    the largest cost of a small model's update after its matrix multiplies (benchmarks/peer.py);
    two elements per 32-bit draw and a multiply cost less than half (benchmarks/RESULTS.md)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or torch.compiler.is_compiling():  # fused there already
        return F.dropout(x, p, True)
    threshold = round(p * 65536)
    n = x.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int32, device=x.device).random_(-2**31, 2**31)
    keep = bits.view(torch.int16)[:n].view(x.shape) >= threshold - 32768
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - threshold / 65536))


def positions(x: torch.Tensor) -> torch.Tensor:
    """0 .. T - 1 for ``x`` of shape (B, T, ...), on x's device and made from x itself: a traced
    export then holds no device constant and runs wherever its inputs are."""
    return torch.ones_like(x[0, :, 0], dtype=torch.long).cumsum(0) - 1


class Dropout(nn.Dropout):
    """nn.Dropout through ``dropout``: the same module, state dict and eval behaviour."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_head: int, dropout: float):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.n_head, self.dropout = n_head, dropout
        self.resid_drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, query: slice | None = None) -> torch.Tensor:
        """Causal self-attention; with ``query``, outputs only for those token positions."""
        B, T, D = x.shape
        H = self.n_head
        drop = self.dropout if self.training else 0.0
        if query is None:
            q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
            allowed = None
        else:
            every = positions(x)
            pos = every[query]
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, query], w[:D], b[:D]).view(B, len(pos), H, D // H).transpose(1, 2)
            k, v = F.linear(x, w[D:], b[D:]).view(B, T, 2, H, D // H).permute(2, 0, 3, 1, 4)
            allowed = pos[:, None] >= every[None, :]
        if drop and x.device.type == "cpu":
            # The fused kernels take no dropout on a CPU: spelled out, with the cheaper mask.
            if allowed is None:
                allowed = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            att = dropout(att.masked_fill(~allowed, float("-inf")).softmax(-1), drop, True)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, is_causal=allowed is None, dropout_p=drop)
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, y.shape[2], D)))


class Block(nn.Module):
    """Pre-LayerNorm GPT-2 block with a ReLU MLP (paper Table C.1)."""

    def __init__(self, d: int, n_head: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, n_head, dropout)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.ReLU(), nn.Linear(4 * d, d), Dropout(dropout))

    def forward(self, x: torch.Tensor, query: slice | None = None) -> torch.Tensor:
        h = self.attn(self.ln1(x), query)
        x = (x if query is None else x[:, query]) + h
        return x + self.mlp(self.ln2(x))


class DecisionTransformer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        d = spec.embed_dim
        self.embed_return = nn.Linear(1, d)
        # Chosen by the observation: stacked frames through convolutions, a flat state through a layer.
        self.embed_state = FrameEncoder(spec.frames, d) if spec.frames else nn.Linear(spec.obs_dim, d)
        self.embed_action = nn.Linear(spec.act_dim, d)
        self.embed_timestep = nn.Embedding(spec.max_ep_len, d) if spec.timestep_embedding else None
        self.embed_ln = nn.LayerNorm(d)
        self.drop = Dropout(spec.dropout)
        self.blocks = nn.ModuleList(Block(d, spec.n_head, spec.dropout) for _ in range(spec.n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = make_head(spec.action_head, d, spec.act_dim, spec.log_std_min, spec.log_std_max)
        self.apply(self._init)
        # The token embeddings keep PyTorch's default initialisation, as the official code's do.
        # embed_ln normalizes each token on its own, and LayerNorm(w * g) is the same vector for
        # every g > 0: with N(0, 0.02) weights and zero biases the return-to-go token would carry
        # only its sign (and a state s and 1.5 s would give one token). The default's bias, of the
        # size of w * g, keeps the magnitude in the normalized token from the first update on.
        for m in (self.embed_return, self.embed_state, self.embed_action, self.embed_timestep):
            if m is not None:
                m.reset_parameters()
        # GPT-2's scaled init of residual projections keeps the residual stream's variance flat.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / (2 * spec.n_layer) ** 0.5)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    @property
    def stochastic(self) -> bool:
        return self.spec.action_head != "deterministic"

    def hidden(self, rtg: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
               timesteps: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Transformer output at every state token: (B, T, embed_dim); (B, 1, embed_dim) for the
        last state token alone with ``last_only``.

        rtg (B, T, 1), states (B, T, obs_dim), actions (B, T, act_dim), timesteps (B, T).
        """
        B, T, _ = states.shape
        tokens = torch.stack([self.embed_return(rtg), self.embed_state(states),
                              self.embed_action(actions)], dim=2)  # (B, T, 3, d)
        if self.embed_timestep is not None:
            tokens = tokens + self.embed_timestep(timesteps.clamp(0, self.spec.max_ep_len - 1)).unsqueeze(2)
        x = tokens.reshape(B, 3 * T, -1)
        if last_only:  # the last action token is a placeholder after the last state: skip it
            x = x[:, :-1]
        x = self.drop(self.embed_ln(x))
        for block in self.blocks[:-1]:
            x = block(x)
        # Only state tokens predict actions, so the last block computes its queries, MLP and
        # output for those alone: the same result for a third of that block's cost.
        x = self.blocks[-1](x, query=slice(3 * T - 2, 3 * T - 1) if last_only else slice(1, None, 3))
        return self.ln_f(x)

    def forward(self, rtg, states, actions, timesteps=None):
        """The action prediction at every timestep: a tensor (deterministic) or an ActionDist."""
        return self.head(self.hidden(rtg, states, actions, timesteps))

    def act_output(self, rtg, states, actions, timesteps=None):
        """Prediction for the last timestep only; the action token of that step is a placeholder
        the causal mask hides from it. Costs what the given context length costs."""
        return self.head(self.hidden(rtg, states, actions, timesteps, last_only=True)[:, -1])
