"""Schedules of the online phase: return targets, exploration noise, the offline share of a batch
and the finetuning learning rate. Every schedule is a pure function of ``progress``, the spent
fraction of the online budget (environment steps done / --online-steps), so that a resumed run
computes the same values. The formulas are the tutorial's (sections 3, 5 and 7)."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

DECAYS = ("constant", "linear", "sqrt", "exponential", "cosine")


def decay(kind: str, progress: float, rate: float = 5.0) -> float:
    """A factor falling from 1 at progress 0: constant 1; linear 1 - p; sqrt (1 - p)^0.5;
    exponential exp(-rate p); cosine (1 + cos(pi p)) / 2."""
    p = min(max(progress, 0.0), 1.0)
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return 1.0 - p
    if kind == "sqrt":
        return math.sqrt(1.0 - p)
    if kind == "exponential":
        return math.exp(-rate * p)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown decay {kind!r}; choose one of {', '.join(DECAYS)}")


def noise_std(std: float, schedule: str, progress: float, floor: float) -> float:
    """Exploration noise: ``std`` decayed by ``schedule``, never below ``floor``."""
    return max(floor, std * decay(schedule, progress))


def linear(start: float, end: float, progress: float) -> float:
    p = min(max(progress, 0.0), 1.0)
    return start + (end - start) * p


def parse_range(text: str, name: str) -> tuple[float, float]:
    """'0.5' -> (0.5, 0.5); '0.5:0.1' -> (0.5, 0.1). Raises ValueError naming ``name``."""
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise ValueError(f"--{name} takes START or START:END (numbers), got {text!r}")
    return values[0], values[-1]


@dataclass
class TargetSettings:
    """The exploration target's settings: a group of the config's toolbox (config.py)."""

    return_target: Literal["fixed", "percentile", "ucb", "curriculum"] = "fixed"
    """Exploration target g_online. fixed: --g-online (or --target-multiple x the expert return);
    percentile: the p-th percentile of recent returns, p from --target-p0 to --target-p1; ucb: mean +
    beta * std of recent returns, beta from --target-beta0 to --target-beta1; curriculum: linear from
    the lowest to the highest recent return. Logged as g_online every round."""
    target_p0: float = 50.0
    """percentile: the percentile at the start of finetuning."""
    target_p1: float = 100.0
    """percentile: the percentile at the end of the online budget."""
    target_beta0: float = 2.0
    """ucb: beta at the start of finetuning."""
    target_beta1: float = 0.0
    """ucb: beta at the end of the online budget."""
    target_window: int = 100
    """Recent returns the adaptive targets use: the last this many (seeded with the returns of the
    buffer's offline trajectories, highest last)."""
    target_clip: bool = False
    """Clip g_online to [lowest observed return, --target-clip-c x highest observed return]."""
    target_clip_c: float = 1.2
    """Optimism allowed by --target-clip."""


class ReturnTarget:
    """g_online from the returns observed so far.

    fixed: ``g_fixed``. percentile: the p-th percentile of the last --target-window returns, p
    rising linearly from --target-p0 to --target-p1. ucb: mean + beta * std of those returns, beta
    falling from --target-beta0 to --target-beta1. curriculum: linear from the lowest to the highest
    of those returns. With --target-clip, the value is clipped to [lowest observed, c * highest
    observed] over the whole run (c: --target-clip-c; for a negative highest return, highest +
    (c - 1) |highest|, so that c > 1 stays optimistic).
    """

    STRATEGIES = ("fixed", "percentile", "ucb", "curriculum")

    def __init__(self, settings: TargetSettings, g_fixed: float):
        if settings.return_target not in self.STRATEGIES:
            raise ValueError(f"unknown return target {settings.return_target!r}; choose one of "
                             f"{', '.join(self.STRATEGIES)}")
        self.s = settings
        self.g_fixed = g_fixed
        self.recent: deque[float] = deque(maxlen=settings.target_window)
        self.lowest = math.inf
        self.highest = -math.inf

    @classmethod
    def for_config(cls, cfg, seen=(), data_returns=None) -> "ReturnTarget":
        """From a ``Config`` (not imported here: the config parses its ranges with this module).
        ``seen``: the returns of the trajectories finetuning starts from (the last ``window`` of
        them, highest last, become the "recent" ones); ``data_returns``: the offline data's, whose
        lowest and highest start the clip's range."""
        g = cfg.g_online if cfg.target_multiple is None else cfg.target_multiple * cfg.ref_max_score
        target = cls(cfg.group(TargetSettings), g)
        target.observe(sorted(seen)[-cfg.target_window:])
        if data_returns is not None:
            target.lowest, target.highest = float(np.min(data_returns)), float(np.max(data_returns))
        return target

    def observe(self, returns) -> None:
        for r in np.asarray(returns, dtype=np.float64).reshape(-1):
            self.recent.append(float(r))
            self.lowest, self.highest = min(self.lowest, float(r)), max(self.highest, float(r))

    def value(self, progress: float) -> float:
        h = np.asarray(self.recent, dtype=np.float64)
        s = self.s
        if s.return_target == "fixed" or not len(h):
            g = self.g_fixed
        elif s.return_target == "percentile":
            g = float(np.percentile(h, linear(s.target_p0, s.target_p1, progress)))
        elif s.return_target == "ucb":
            g = float(h.mean() + linear(s.target_beta0, s.target_beta1, progress) * h.std())
        else:
            g = float(linear(h.min(), h.max(), progress))
        if s.target_clip and self.highest > -math.inf:
            g = min(max(g, self.lowest), self.highest + (s.target_clip_c - 1.0) * abs(self.highest))
        return g

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "lowest": self.lowest, "highest": self.highest}

    def load_state_dict(self, state: dict) -> None:
        self.recent.clear()
        self.recent.extend(state["recent"])
        self.lowest = float(state["lowest"])
        self.highest = float(state["highest"])
