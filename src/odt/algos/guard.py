"""The divergence guard of a learner. A non-finite loss, gradient norm or lambda skips that update
on the device (the weights stay as they were); the guard counts such steps there, and the longest
run of them, and judges once per interval, when the host reads the learner's metrics: the skipped
updates are taken back from the counters, and after ``max_bad`` in a row the learner returns to its
last good state, a snapshot taken at an interval end with no skip, every ``snapshot_every`` actor
updates. ``events`` holds what happened, for the run's log."""
from __future__ import annotations

import copy
from typing import Protocol

import torch

# What the guard counts, in this order: the part that stepped, and what was not finite. An actor
# step with a non-finite loss or gradient norm was not applied; one with a non-finite lambda was
# (the temperature kept its old value).
REASONS = (("critic", "loss"), ("actor", "loss"), ("actor", "gradient norm"), ("actor", "lambda"))


class Guarded(Protocol):
    updates: int

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def take_back(self, updates: int) -> None: ...


class DivergenceGuard:
    def __init__(self, learner: Guarded, max_bad: int, snapshot_every: int, device: torch.device):
        self.learner = learner
        self.max_bad = max_bad
        self.snapshot_every = snapshot_every
        self.events: list[dict] = []
        self._counts = torch.zeros(len(REASONS), device=device)
        self._streak = torch.zeros((), device=device)  # bad steps in a row, on the device
        self._worst = torch.zeros((), device=device)  # the longest run in this interval
        self.snapshot()

    def snapshot(self) -> None:
        self._snapshot = copy.deepcopy(self.learner.state_dict())
        self._snapshot_updates = self.learner.updates

    def critic_step(self, finite: torch.Tensor) -> None:
        bad = ~finite
        self._counts[0] += bad
        self._streak += bad  # only a good actor update ends a run
        torch.maximum(self._worst, self._streak, out=self._worst)

    def actor_step(self, loss_finite: torch.Tensor, applied: torch.Tensor, lambda_finite: torch.Tensor) -> None:
        """``applied``: the loss and the gradient norm were finite."""
        bad = torch.stack([~loss_finite, loss_finite & ~applied, applied & ~lambda_finite])
        self._counts[1:] += bad
        good = applied & lambda_finite
        self._streak.copy_(torch.where(good, 0.0, self._streak + 1))
        torch.maximum(self._worst, self._streak, out=self._worst)

    def device_state(self) -> list[torch.Tensor]:
        """What ``judge`` needs, for the learner's one read of the interval."""
        return [self._counts, self._worst]

    def judge(self, counts: list[float], worst: float) -> dict[str, float]:
        """The interval's verdict from what the device counted: events, the counters put right, a
        rollback or a snapshot; the metrics it adds (``skipped``, ``rollback``)."""
        self._counts.zero_()
        self._worst.zero_()
        self.learner.take_back(int(counts[1] + counts[2]))
        out = {}
        for n, (part, what) in zip(counts, REASONS):
            if n:
                self.events.append({"event": "skipped_update", "part": part, "reason": f"non-finite {what}",
                                    "count": int(n), "in_a_row": int(worst)})
                out["skipped"] = out.get("skipped", 0.0) + n
        if worst >= self.max_bad:
            self.learner.load_state_dict(copy.deepcopy(self._snapshot))
            self.events.append({"event": "rollback", "reason": f"{int(worst)} non-finite updates in a row",
                                "to_updates": self.learner.updates})
            self._streak.zero_()
            out["rollback"] = 1.0
        elif not out and self.learner.updates // self.snapshot_every > self._snapshot_updates // self.snapshot_every:
            self.snapshot()
        return out
