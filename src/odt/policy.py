"""The stateful ``Policy`` (a trained model, its normalizer, a context window and the target
return) and ``EnsemblePolicy``; ``load_policy`` builds either from a run directory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import hf
from .checkpoint import build_model, load_from_run, scaling_of
from .shipped import resolve
from .config import Config, ConfigError
from .envs.make import flatten_goal
from .models.transformer import DecisionTransformer
from .scaling import Scaling


class Policy:
    """A trained Decision Transformer wrapped for step-by-step control.

    >>> policy = Policy.load("runs/my-run")
    >>> policy.reset(target_return=3600)
    >>> action = policy.act(obs)                 # first step
    >>> action = policy.act(obs, reward)         # reward of the previous action

    ``act`` also takes a batch (n, obs_dim) after ``reset(target, n=n)``; all n contexts then
    advance together, which is how the vector-environment rollouts use it.
    """

    ACTIONS = ("mean", "mean+noise", "sample")

    def __init__(self, model: DecisionTransformer, scaling: Scaling, rtg_scale: float, context: int,
                 action: str = "mean", noise_std: float = 0.0, generator: torch.Generator | None = None):
        """``action``: mean, the actor's mean action (a deterministic actor's action: evaluation,
        never noisy); mean+noise, that plus Gaussian noise of std ``noise_std`` in the [-1, 1] box;
        sample, a stochastic actor's sampled action, plus that noise where ``noise_std`` is set.
        Exploration draws from ``generator``."""
        if action not in self.ACTIONS:
            raise ValueError(f"action {action!r}: choose one of {', '.join(self.ACTIONS)}")
        self.model, self.scaling = model, scaling
        self.device = next(model.parameters()).device
        self.obs_mean = torch.as_tensor(scaling.obs_mean, dtype=torch.float32, device=self.device)
        self.obs_std = torch.as_tensor(scaling.obs_std, dtype=torch.float32, device=self.device)
        self.rtg_scale, self.context = rtg_scale, context
        self.action, self.noise_std, self.generator = action, noise_std, generator
        self._n = 0

    @classmethod
    def load(cls, run_dir: str | Path, checkpoint: str = "final", device: str = "cpu", action: str = "mean",
             **hf_settings) -> "Policy":
        """A run directory's policy, or a Hugging Face DecisionTransformerModel directory's (odt.hf:
        ``rtg_scale=`` and ``context=`` give what its config.json lacks)."""
        return load_policy(resolve(run_dir), checkpoint, device=device, action=action, **hf_settings)

    def reset(self, target_return: float | np.ndarray, n: int = 1) -> None:
        spec, dev, C = self.model.spec, self.device, self.context
        self._n, self._t = n, 0
        self._batched = np.ndim(target_return) > 0 or n > 1
        # A window of the last ``context`` steps, slid as the episode goes: memory and cost do
        # not grow with the episode, and episodes may run past max_ep_len (timesteps clamp).
        self._states = torch.zeros(n, C, spec.obs_dim, device=dev)
        self._actions = torch.zeros(n, C, spec.act_dim, device=dev)
        self._rtg = torch.zeros(n, C, 1, device=dev)
        target = torch.as_tensor(np.broadcast_to(target_return, (n,)).astype(np.float32), device=dev)
        self._rtg[:, 0, 0] = target / self.rtg_scale
        self.model.eval()  # once per episode: toggling it every step costs more than a layer

    def act(self, obs: np.ndarray, reward: float | np.ndarray | None = None,
            rows: np.ndarray | None = None) -> np.ndarray:
        """Action for the current observation; ``reward`` is the reward the previous action got
        (it lowers the return-to-go). ``rows`` restricts the forward pass to some of the n
        contexts (finished episodes cost nothing)."""
        return self.commit(self.propose(obs, reward, rows), rows)

    @torch.no_grad()
    def propose(self, obs: np.ndarray, reward: float | np.ndarray | None = None,
                rows: np.ndarray | None = None) -> torch.Tensor:
        """The action in the [-1, 1] box, exploration noise included, before ``commit`` records it
        in the context (an ensemble records the action it executes instead)."""
        if self._n == 0:
            raise RuntimeError("call reset(target_return) before act()")
        if isinstance(obs, dict):  # a goal-conditioned environment's own observation, as make_env flattens it
            obs = flatten_goal(obs["observation"], obs["desired_goal"])
        t, C = self._t, self.context
        obs_t = torch.as_tensor(np.asarray(obs, np.float32).reshape(self._n if rows is None else len(rows), -1),
                                device=self.device)
        sel = slice(None) if rows is None else torch.as_tensor(rows, device=self.device)
        p = min(t, C - 1)  # this step's slot in the window
        if t > 0:
            g = self._rtg[:, min(t - 1, C - 1), 0].clone()
            if t >= C:  # the window is full: drop its oldest step
                for buf in (self._states, self._actions, self._rtg):
                    buf[:, :-1] = buf[:, 1:].clone()
            r = torch.as_tensor(np.asarray(0.0 if reward is None else reward, np.float32), device=self.device)
            self._rtg[sel, p, 0] = g[sel] - r.reshape(-1) / self.rtg_scale
        self._states[sel, p] = (obs_t - self.obs_mean) / self.obs_std
        ts = torch.arange(t - p, t + 1, device=self.device).expand(obs_t.shape[0], -1)
        out = self.model.act_output(self._rtg[sel, :p + 1], self._states[sel, :p + 1],
                                    self._actions[sel, :p + 1], ts)
        if not self.model.stochastic:
            a = out
        elif self.action != "sample":
            a = out.mode()
        else:
            a = out.sample(self.generator)
        if self.action != "mean" and self.noise_std > 0:
            a = a + self.noise_std * torch.randn(a.shape, generator=self.generator, device=self.device)
        return a.clamp(-1, 1)

    def commit(self, a: torch.Tensor, rows: np.ndarray | None = None) -> np.ndarray:
        """Record the executed action (in the [-1, 1] box) in the context; return it in the
        environment's units."""
        sel = slice(None) if rows is None else torch.as_tensor(rows, device=self.device)
        self._actions[sel, min(self._t, self.context - 1)] = a
        if rows is None:
            self.advance()
        a = self.scaling.from_unit(a.cpu().numpy())
        return a if self._batched or rows is not None else a[0]

    def advance(self) -> None:
        """Move all contexts one step on after a batched ``act(..., rows=...)``."""
        self._t += 1


class EnsemblePolicy:
    """Several policies (separately seeded learners) acting as one.

    Evaluating (``exploring`` False): the mean of the members' mean actions. Exploring, ``mode``
    ``disagreement``: that mean plus Gaussian noise whose std, per action dimension, is
    ``scale`` times the members' standard deviation (the tutorial's ensemble bonus), on top of the
    scheduled noise; ``member``: every episode follows one member drawn at random, sampling
    actions. Every member's context records the action executed.
    """

    def __init__(self, members: list[Policy], mode: str = "disagreement", scale: float = 1.0,
                 exploring: bool = False, noise_std: float = 0.0, generator: torch.Generator | None = None):
        self.members, self.mode, self.scale = members, mode, scale
        self.exploring, self.noise_std, self.generator = exploring, noise_std, generator
        for m in members:  # members propose mean actions except when each drives its own episodes
            if not (exploring and mode == "member"):
                m.action, m.noise_std = "mean", 0.0
        self.model, self.scaling = members[0].model, members[0].scaling
        self.disagreement: list[float] = []  # mean std across members, per step

    def reset(self, target_return, n: int = 1) -> None:
        for m in self.members:
            m.reset(target_return, n)
        self._choice = torch.randint(len(self.members), (n,), generator=self.generator,
                                     device=self.generator.device if self.generator is not None else "cpu")

    @torch.no_grad()
    def act(self, obs, reward=None, rows=None) -> np.ndarray:
        proposals = torch.stack([m.propose(obs, reward, rows) for m in self.members])  # (E, n, A)
        spread = proposals.std(0, correction=0)
        self.disagreement.append(float(spread.mean()))
        if not self.exploring:
            a = proposals.mean(0)
        elif self.mode == "member":
            pick = self._choice if rows is None else self._choice[torch.as_tensor(rows, device=self._choice.device)]
            a = proposals[pick.to(proposals.device), torch.arange(proposals.shape[1], device=proposals.device)]
        else:
            std = self.noise_std + self.scale * spread
            noise = torch.randn(std.shape, generator=self.generator, device=std.device)
            a = (proposals.mean(0) + std * noise).clamp(-1, 1)
        out = None
        for m in self.members:
            out = m.commit(a, rows)
        return out

    def advance(self) -> None:
        for m in self.members:
            m.advance()


def load_models(run_dir: Path, checkpoint: str = "final",
                device: str = "cpu") -> tuple[list[DecisionTransformer], dict, Path]:
    """A checkpoint's models in eval mode (one, or an ensemble's members), its state, its path."""
    state, path = load_from_run(Path(run_dir), checkpoint)
    models = []
    for learner in state["ensemble"]["learners"]:
        model = build_model(state["spec"], device)
        model.load_state_dict(learner["model"])
        models.append(model.eval())
    return models, state, path


def load_policy(run_dir: Path, checkpoint: str = "final", device: str = "cpu", action: str = "mean",
                **hf_settings) -> Policy | EnsemblePolicy:
    if hf.is_model_dir(run_dir):  # a Hugging Face model directory: its weights and config.json's settings
        return Policy(*hf.policy_parts(run_dir, device, **hf_settings), action=action)
    if hf_settings:
        raise ConfigError(f"{', '.join(hf_settings)}: for a Hugging Face model directory; the run {run_dir} has "
                          "its own in its config.json")
    models, state, _ = load_models(run_dir, checkpoint, device)
    cfg = Config.load(Path(run_dir) / "config.json")
    return make_policy(models, cfg, scaling_of(state), action, exploring=action != "mean")


def make_policy(models: list[DecisionTransformer], cfg: Config, scaling: Scaling, action: str = "mean",
                noise: float = 0.0, generator: torch.Generator | None = None,
                exploring: bool = False) -> Policy | EnsemblePolicy:
    """One model's Policy, or an EnsemblePolicy over several (``exploring``: see EnsemblePolicy)."""
    policies = [Policy(m, scaling, cfg.rtg_scale, cfg.eval_context, action, noise, generator) for m in models]
    if len(policies) == 1:
        return policies[0]
    return EnsemblePolicy(policies, cfg.ensemble_mode, cfg.ensemble_scale, exploring=exploring, noise_std=noise,
                          generator=generator)
