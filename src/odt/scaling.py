"""``Scaling``: how a run's data meets its networks, in one object: the observation normalizer
(the offline data's mean and std) and the environment's action bounds (the networks act in the
[-1, 1] box). A checkpoint carries it as the state dict of this component."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .envs.make import scale_actions_from_unit, scale_actions_to_unit


@dataclass
class Scaling:
    """``discrete``: the environment takes an action's index out of n, and the networks its one-hot
    vector (act_low 0 and act_high 1, n wide: the one-hot box)."""

    obs_mean: np.ndarray
    obs_std: np.ndarray
    act_low: np.ndarray
    act_high: np.ndarray
    discrete: bool = False
    FIELDS: ClassVar[tuple[str, ...]] = ("obs_mean", "obs_std", "act_low", "act_high")

    def __post_init__(self):
        for name in self.FIELDS:
            value = getattr(self, name)
            setattr(self, name, (value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value))
                    .astype(np.float32, copy=False))

    @classmethod
    def unit(cls, obs_dim: int, act_dim: int) -> "Scaling":
        """No normalization and the [-1, 1] box (multi-task runs, whose tasks normalize their own)."""
        return cls(np.zeros(obs_dim), np.ones(obs_dim), -np.ones(act_dim), np.ones(act_dim))

    @classmethod
    def for_discrete(cls, obs_mean: np.ndarray, obs_std: np.ndarray, n_actions: int) -> "Scaling":
        return cls(obs_mean, obs_std, np.zeros(n_actions), np.ones(n_actions), discrete=True)

    @property
    def unit_actions(self) -> bool:
        """Whether the environment's actions are the networks' as they are."""
        return not self.discrete and bool(np.allclose(self.act_low, -1) and np.allclose(self.act_high, 1))

    def to_unit(self, actions: np.ndarray) -> np.ndarray:
        """Environment actions as the networks take them: in [-1, 1], or one-hot vectors of indices."""
        if self.discrete:
            return np.eye(len(self.act_low), dtype=np.float32)[np.asarray(actions).reshape(-1).astype(np.int64)]
        return scale_actions_to_unit(actions, self.act_low, self.act_high)

    def from_unit(self, actions: np.ndarray) -> np.ndarray:
        """The networks' actions as the environment takes them: rescaled, or the indices of one-hots."""
        if self.discrete:
            return np.asarray(actions).argmax(-1)
        return scale_actions_from_unit(actions, self.act_low, self.act_high)

    def state_dict(self) -> dict:
        return {**{name: torch.as_tensor(getattr(self, name)) for name in self.FIELDS}, "discrete": self.discrete}

    def load_state_dict(self, state: dict) -> None:
        self.__init__(**{name: state[name] for name in self.FIELDS}, discrete=bool(state["discrete"]))
