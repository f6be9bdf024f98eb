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

    def update(self, sample: Callable[[np.random.Generator], Batch]) -> None:
        """One ``update`` call of every learner, in order (their dropout draws share torch's global
        generator, so the order is part of a run's reproducibility)."""
        for learner, rng in zip(self.learners, self.rngs):
            learner.update(sample(rng))

    def critic_only_update(self, sample: Callable[[np.random.Generator], Batch]) -> None:
        """One critic-only step of every learner (--critic-pretrain-updates), in order."""
        for learner, rng in zip(self.learners, self.rngs):
            learner.critic_only_update(sample(rng))

    def read(self, on_events: Callable[[Learner], None]) -> dict[str, float]:
        """Every learner's interval read (``Learner.read``), its guard's events handed to
        ``on_events``; the lead's metrics."""
        metrics = [learner.read() for learner in self.learners]
        for learner in self.learners:
            if learner.guard.events:
                on_events(learner)
        return metrics[0]

    # --- state: every learner's, and every learner's batch generator -----------------
    def state_dict(self) -> dict:
        return {"learners": [learner.state_dict() for learner in self.learners],
                "batch_rngs": [g.bit_generator.state for g in self.rngs]}

    def load_state_dict(self, state: dict) -> None:
        for learner, st in zip(self.learners, state["learners"]):
            learner.load_state_dict(st)
        for g, st in zip(self.rngs, state["batch_rngs"]):
            g.bit_generator.state = st

    def restore_weights(self, state: dict) -> None:
        """Roll every learner back to ``state``'s networks and optimizers (the best checkpoint's),
        their counters going on."""
        for learner, st in zip(self.learners, state["learners"]):
            learner.restore_weights(st)
