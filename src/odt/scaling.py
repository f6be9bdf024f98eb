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
    obs_mean: np.ndarray
    obs_std: np.ndarray
    act_low: np.ndarray
    act_high: np.ndarray
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

    @property
    def unit_actions(self) -> bool:
        return bool(np.allclose(self.act_low, -1) and np.allclose(self.act_high, 1))

    def to_unit(self, actions: np.ndarray) -> np.ndarray:
        return scale_actions_to_unit(actions, self.act_low, self.act_high)

    def from_unit(self, actions: np.ndarray) -> np.ndarray:
        return scale_actions_from_unit(actions, self.act_low, self.act_high)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: torch.as_tensor(getattr(self, name)) for name in self.FIELDS}

    def load_state_dict(self, state: dict) -> None:
        self.__init__(**{name: state[name] for name in self.FIELDS})
