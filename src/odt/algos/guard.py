"""The divergence guard of a learner: a non-finite loss, gradient norm or lambda skips that update
(the device already left the weights as they were); after ``max_bad`` in a row, the learner
returns to its last good state, a snapshot taken every ``snapshot_every`` good actor updates.
``events`` holds what happened, for the run's log."""
from __future__ import annotations

import copy
from typing import Protocol


class Guarded(Protocol):
    updates: int

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class DivergenceGuard:
    def __init__(self, learner: Guarded, max_bad: int, snapshot_every: int):
        self.learner = learner
        self.max_bad = max_bad
        self.snapshot_every = snapshot_every
        self.events: list[dict] = []
        self._bad = 0
        self.snapshot()

    def snapshot(self) -> None:
        self._snapshot = copy.deepcopy(self.learner.state_dict())

    def good(self) -> None:
        """An actor update that was applied."""
        self._bad = 0
        if self.learner.updates % self.snapshot_every == 0:
            self.snapshot()

    def skip(self, part: str, what: str, value: float) -> dict[str, float]:
        """A non-finite update, not applied; enough of them in a row roll the learner back."""
        self._bad += 1
        self.events.append({"event": "skipped_update", "part": part, "reason": f"non-finite {what}",
                            "value": str(value), "in_a_row": self._bad})
        if self._bad < self.max_bad:
            return {"skipped": 1.0}
        self.learner.load_state_dict(copy.deepcopy(self._snapshot))
        self.events.append({"event": "rollback", "reason": f"{self._bad} non-finite updates in a row",
                            "to_updates": self.learner.updates})
        self._bad = 0
        return {"skipped": 1.0, "rollback": 1.0}
