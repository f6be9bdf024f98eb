"""What a run is before its loop starts: ``Start`` says what it starts from, ``Prepared`` holds what
setup made (the resolved config, the run directory and its logger, the data, the scaling). The
transformer's ``Trainer`` and the baselines both begin from a ``Prepared``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import Config
from .data.trajectories import TrajectoryDataset
from .envs.multitask import Task
from .logging import RunLogger
from .scaling import Scaling


@dataclass
class Start:
    """fresh: nothing loaded. init (`odt finetune --init`): a pretrained checkpoint's networks (and,
    unless --restart-optimizers, their optimizers), read from ``source`` or given as ``state`` (a
    Hugging Face model, converted in memory). resume (``--resume``, ``--extend``): the run's own
    checkpoint, every component's state; ``summary`` adds entries to the run's summary."""

    kind: str = "fresh"
    source: Path | None = None
    state: dict | None = None
    summary: dict = field(default_factory=dict)

    @property
    def resumes(self) -> bool:
        return self.kind == "resume"


@dataclass
class Prepared:
    cfg: Config
    command: str
    run_dir: Path
    logger: RunLogger
    dataset: TrajectoryDataset
    scaling: Scaling
    tasks: list[Task]
    device: str
    start: Start
