"""E learners behind one interface (the tutorial's ensembles): each update step, every member makes
one update on a batch drawn with its own generator. The first member, the lead, has the run's seed;
its metrics are the ones logged, and its checkpoint carries the others' states."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ..data.buffer import Batch
from .learner import Learner


class Ensemble:
    def __init__(self, learners: list[Learner], rngs: list[np.random.Generator]):
        self.learners, self.rngs = learners, rngs

    def __iter__(self) -> Iterator[Learner]:
        return iter(self.learners)

    def __len__(self) -> int:
        return len(self.learners)

    @property
    def lead(self) -> Learner:
        return self.learners[0]

    @property
    def members(self) -> list[Learner]:
        """The learners beyond the lead."""
        return self.learners[1:]

    def update(self, sample: Callable[[np.random.Generator], Batch],
               on_events: Callable[[Learner], None]) -> dict[str, float]:
        """One ``update`` call of every learner, in order (their dropout draws share torch's global
        generator, so the order is part of a run's reproducibility); the lead's metrics."""
        lead_metrics: dict[str, float] = {}
        for learner, rng in zip(self.learners, self.rngs):
            metrics = learner.update(sample(rng))
            if learner.events:
                on_events(learner)
            if learner is self.lead:
                lead_metrics = metrics
        return lead_metrics

    # --- what a checkpoint holds beyond the lead ---------------------------------------
    def member_states(self) -> list[dict]:
        return [m.state_dict() for m in self.members]

    def rng_states(self) -> list[dict]:
        return [g.bit_generator.state for g in self.rngs[1:]]

    def load_members(self, states: list[dict], rng_states: list[dict]) -> None:
        for g, st in zip(self.rngs[1:], rng_states):
            g.bit_generator.state = st
        for m, st in zip(self.members, states):
            m.load_state_dict(st)
