"""Schedules of the online phase: return targets, exploration noise, the offline share of a batch
and the finetuning learning rate. Every schedule is a pure function of ``progress``, the spent
fraction of the online budget (environment steps done / --online-steps), so that a resumed run
computes the same values. The formulas are the tutorial's (sections 3, 5 and 7)."""
from __future__ import annotations

import math
from collections import deque

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


def noise_std(std: float, schedule: str, progress: float, floor: float = 0.0) -> float:
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


class ReturnTarget:
    """g_online from the returns observed so far.

    fixed: ``g_fixed``. percentile: the p-th percentile of the last ``window`` returns, p rising
    linearly from p0 to p1. ucb: mean + beta * std of those returns, beta falling from beta0 to
    beta1. curriculum: linear from the lowest to the highest of those returns. With ``clip``, the
    value is clipped to [lowest observed, c * highest observed] over the whole run (for a negative
    highest return, highest + (c - 1) |highest|, so that c > 1 stays optimistic).
    """

    STRATEGIES = ("fixed", "percentile", "ucb", "curriculum")

    def __init__(self, strategy: str, g_fixed: float, *, p0: float = 50.0, p1: float = 100.0,
                 beta0: float = 2.0, beta1: float = 0.0, window: int = 100, clip: bool = False, clip_c: float = 1.2):
        if strategy not in self.STRATEGIES:
            raise ValueError(f"unknown return target {strategy!r}; choose one of {', '.join(self.STRATEGIES)}")
        self.strategy, self.g_fixed = strategy, g_fixed
        self.p0, self.p1, self.beta0, self.beta1 = p0, p1, beta0, beta1
        self.clip, self.clip_c = clip, clip_c
        self.recent: deque[float] = deque(maxlen=window)
        self.lowest, self.highest = math.inf, -math.inf

    @classmethod
    def for_config(cls, cfg, seen=(), data_returns=None) -> "ReturnTarget":
        """From a ``Config`` (not imported here: the config parses its ranges with this module).
        ``seen``: the returns of the trajectories finetuning starts from (the last ``window`` of
        them, highest last, become the "recent" ones); ``data_returns``: the offline data's, whose
        lowest and highest start the clip's range."""
        g = cfg.g_online if cfg.target_multiple is None else cfg.target_multiple * cfg.ref_max_score
        target = cls(cfg.return_target, g, p0=cfg.target_p0, p1=cfg.target_p1, beta0=cfg.target_beta0,
                     beta1=cfg.target_beta1, window=cfg.target_window, clip=cfg.target_clip, clip_c=cfg.target_clip_c)
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
        if self.strategy == "fixed" or not len(h):
            g = self.g_fixed
        elif self.strategy == "percentile":
            g = float(np.percentile(h, linear(self.p0, self.p1, progress)))
        elif self.strategy == "ucb":
            g = float(h.mean() + linear(self.beta0, self.beta1, progress) * h.std())
        else:
            g = float(linear(h.min(), h.max(), progress))
        if self.clip and self.highest > -math.inf:
            g = min(max(g, self.lowest), self.highest + (self.clip_c - 1.0) * abs(self.highest))
        return g

    def state_dict(self) -> dict:
        return {"recent": list(self.recent), "lowest": self.lowest, "highest": self.highest}

    def load_state_dict(self, state: dict) -> None:
        self.recent.clear()
        self.recent.extend(state["recent"])
        self.lowest, self.highest = float(state["lowest"]), float(state["highest"])
