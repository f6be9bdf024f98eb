"""``Replay``: the buffers a run's batches come from and the drawing of those batches. Offline,
the whole dataset (pretraining, the critics' warm-up, and --offline-ratio's share of online
batches); online, the FIFO buffer of Algorithm 1, seeded with the top-N offline trajectories
(with --offline-ratio: online trajectories only)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import Config
from .buffer import Batch, ReplayBuffer, Sampling
from .trajectories import TrajectoryDataset

if TYPE_CHECKING:  # a type only: the normalizer's two arrays are what the buffers keep of it
    from ..scaling import Scaling


class Replay:
    def __init__(self, cfg: Config, dataset: TrajectoryDataset, scaling: Scaling, device: str):
        self.cfg = cfg
        self.dataset = dataset
        self.scaling = scaling
        self.device = device
        self.sampling = Sampling.of(cfg)
        self.buffer: ReplayBuffer | None = None  # the online buffer, once finetuning has begun
        self.offline: ReplayBuffer | None = None  # the whole dataset beside it, with --offline-ratio

    @property
    def mixing(self) -> bool:
        return self.cfg.offline_ratio is not None

    def whole_dataset(self) -> ReplayBuffer:
        """Every offline trajectory in one buffer."""
        buffer = self._buffer(len(self.dataset.episodes))
        buffer.fill(self.dataset.episodes)
        return buffer

    def _buffer(self, capacity: int) -> ReplayBuffer:
        return ReplayBuffer(capacity, self.scaling, self.sampling, self.dataset.episodes, self.device)

    def start_online(self, n_tasks: int, rng: np.random.Generator) -> bool:
        """The online buffer, unless a resumed run has it already; whether it was made now."""
        if self.mixing:
            self.offline = self.whole_dataset()
        if self.buffer is not None:
            return False
        self.buffer = self._buffer(self.cfg.buffer_size)
        if not self.mixing:
            self.buffer.fill_per_task(self.dataset.episodes, n_tasks,
                                      rng=rng if self.cfg.buffer_seeding == "random" else None)
        return True

    def seen_returns(self) -> list[float]:
        """The returns finetuning starts from (the return target's first "recent" ones)."""
        return [e.ret for e in (self.offline if self.mixing else self.buffer).episodes]

    def batch(self, buffer: ReplayBuffer, rng: np.random.Generator, offline_ratio: float | None) -> Batch:
        """A batch from ``buffer``; with ``offline_ratio``, that share of it from the whole dataset."""
        B, K = self.cfg.batch_size, self.cfg.context_len
        if offline_ratio is None or not len(buffer):
            return (buffer if offline_ratio is None else self.offline).sample(B, K, rng)
        n_off = int(round(B * offline_ratio))
        parts = [self.offline.draw(n_off, K, rng) if n_off else None, buffer.draw(B - n_off, K, rng) if n_off < B else None]
        parts = [part for part in parts if part is not None]
        # Both buffers pack the same fields of the same widths: the windows stack as they are.
        windows, mask, frames = (None if x[0] is None else torch.cat(x) for x in zip(*parts))
        return Batch.of(windows, mask, buffer.columns if n_off < B else self.offline.columns, frames)

    def state_dict(self) -> dict | None:
        """The online buffer's contents (the whole dataset is the run's own data, loaded again)."""
        return None if self.buffer is None else self.buffer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.buffer = self._buffer(self.cfg.buffer_size)
        self.buffer.load_state_dict(state)
