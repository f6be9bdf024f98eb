"""TD3's half of vidt and odt-td3, as one component the Learner holds: the twin critics, their
targets, the target actor, the critics' Adam, and the critic step."""
from __future__ import annotations

import copy
from typing import Callable

import torch

from ..config import TD3Settings
from ..data.buffer import Batch
from ..models.critic import TwinCritic
from ..models.transformer import DecisionTransformer
from .losses import critic_loss, masked_mean, td3_target


def critic_target(target_actor: DecisionTransformer, target_critic: TwinCritic, batch: Batch,
                  td3: TD3Settings) -> torch.Tensor:
    """TD3's y = r + gamma (1 - terminated) min(Q1', Q2'): the target actor acts on the window shifted
    by one step, and its action at s_{t+1}, smoothed by clipped noise, is what the target critics
    judge. The critics themselves run in fp32 (autocast leaves them alone: see the cast)."""
    ts = (batch.timesteps + 1).clamp(max=target_actor.spec.max_ep_len - 1)
    pred = target_actor(batch.next_rtg, batch.next_states, batch.next_actions, ts)
    a = (pred if isinstance(pred, torch.Tensor) else pred.mode()).float()
    noise = (torch.randn_like(a) * td3.target_noise).clamp(-td3.noise_clip, td3.noise_clip)
    with torch.autocast(a.device.type, enabled=False):
        q1_next, q2_next = target_critic(batch.next_states, (a + noise).clamp(-1, 1))
    return td3_target(batch.rewards + td3.td_reward_shift, batch.terminals, q1_next, q2_next, td3.gamma)


class TD3Critic:
    """``autocast``: the actor's precision context, in which the target actor runs."""

    def __init__(self, actor: DecisionTransformer, td3: TD3Settings, autocast: Callable):
        spec = actor.spec
        device = next(actor.parameters()).device
        self.actor = actor
        self.td3 = td3
        self._autocast = autocast
        self.critic = TwinCritic(spec.obs_dim, spec.act_dim, td3.critic_hidden, td3.critic_layernorm).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_target = copy.deepcopy(actor).requires_grad_(False).eval()
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=td3.critic_lr, fused=True)
        self.updates = 0  # a skipped step counts too: it keeps the policy delay's rhythm

    def loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """TD3's critic loss against ``critic_target``'s bootstrapped target, and Q1."""
        with torch.no_grad(), self._autocast():
            y = critic_target(self.actor_target, self.critic_target, batch, self.td3)
        q1, q2 = self.critic(batch.states, batch.actions)
        return critic_loss(q1, q2, y, batch.critic_mask), q1.detach()

    def update(self, batch: Batch, loss_fn: Callable | None = None) -> dict[str, torch.Tensor]:
        """The critic step on the device, through ``loss_fn`` (``loss``, compiled where the learner
        compiles). A non-finite loss leaves the critics as they were (``found_inf``)."""
        loss, q1 = (loss_fn or self.loss)(batch)
        self.optimizer.zero_grad(set_to_none=True)  # also drops what the actor's RL term left
        loss.backward()
        loss = loss.detach()
        # Left to eager: fused Adam is one kernel already, and dynamo drops the ``found_inf`` it reads.
        self.optimizer.found_inf = (~torch.isfinite(loss)).float()
        self.optimizer.step()
        self.updates += 1
        # q_mean against mc_return_mean over the same steps: how far ahead the critic sees.
        return {"critic_loss": loss, "q_mean": masked_mean(q1, batch.critic_mask),
                "mc_return_mean": masked_mean(batch.mc_returns, batch.critic_mask)}

    def q1(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.critic.q1_only(states, actions)

    @property
    def targets_due(self) -> bool:
        """Whether this critic step is one that TD3 pairs with an actor step (every policy_delay)."""
        return self.updates % self.td3.policy_delay == 0

    @torch.no_grad()
    def soft_update(self) -> None:
        for target, source in ((self.critic_target, self.critic), (self.actor_target, self.actor)):
            torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), self.td3.tau)

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "actor_target": self.actor_target.state_dict(), "critic_optimizer": self.optimizer.state_dict(),
                "critic_updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.load_networks(state)
        self.optimizer.load_state_dict(state["critic_optimizer"])
        self.updates = int(state["critic_updates"])

    def load_networks(self, state: dict) -> None:
        """The critics, their targets and the target actor, not the optimizer or the count."""
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.actor_target.load_state_dict(state["actor_target"])

    def follow_actor(self) -> None:
        """Fresh critics for an actor that had none: the target actor starts as the actor."""
        self.actor_target.load_state_dict(self.actor.state_dict())
