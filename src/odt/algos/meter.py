"""A learner's step metrics, summed on its device and read by the host once per interval (a round,
a logging interval), so that no step waits for the host: a GPU runs the steps ahead while the host
draws the next batches. Each metric's sum and count are kept in float64 and added step by step,
so a mean is what summing the steps' values on the host would give."""
from __future__ import annotations

import torch


class Meter:
    def __init__(self):
        self.order: list[str] = []  # every metric, in the order first seen in the interval
        # Per set of metrics added together, per dtype: their sums (float64) and the valid steps.
        self._sums: dict[tuple, torch.Tensor] = {}
        self._counts: dict[tuple, torch.Tensor] = {}

    def add(self, metrics: dict[str, torch.Tensor], valid: torch.Tensor) -> None:
        """One step's metrics (0-d tensors on the device), counted where ``valid`` (a 0-d bool)."""
        for name in metrics:
            if name not in self.order:
                self.order.append(name)
        by_dtype: dict[torch.dtype, list[str]] = {}
        for name, value in metrics.items():
            by_dtype.setdefault(value.dtype, []).append(name)
        for dtype, names in by_dtype.items():
            values = torch.stack([metrics[n].detach().reshape(()) for n in names]).double()
            key = (dtype, *names)
            kept = torch.where(valid, values, 0.0)  # a skipped step's NaN never enters the sum
            if key in self._sums:
                self._sums[key] += kept
                self._counts[key] += valid
            else:
                self._sums[key] = kept
                self._counts[key] = valid.double()

    def read(self, extra: list[torch.Tensor] = (), reset: bool = True) -> tuple[dict[str, float], list[float]]:
        """Each metric's mean over the valid steps that made it (those with none are left out), and
        ``extra`` (0-d or 1-d tensors on the same device), in one copy to the host."""
        keys = list(self._sums)
        parts = [t for k in keys for t in (self._sums[k], self._counts[k].reshape(1))]
        parts += [e.double().reshape(-1) for e in extra]
        values = torch.cat(parts).tolist() if parts else []
        sums, counts, i = {}, {}, 0
        for key in keys:
            names = key[1:]
            for name, value in zip(names, values[i:i + len(names)]):
                sums[name], counts[name] = value, values[i + len(names)]
            i += len(names) + 1
        means = {name: sums[name] / counts[name] for name in self.order if counts.get(name)}
        if reset:
            self._sums.clear()
            self._counts.clear()
            self.order.clear()
        rest, out = values[i:], []
        for e in extra:
            out.append(rest[:e.numel()] if e.dim() else rest[0])
            rest = rest[e.numel():]
        return means, out
