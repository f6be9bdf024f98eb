"""What a run is before its loop starts: ``Start`` says what it starts from, ``Prepared`` holds what
setup made (the resolved config, the run directory and its logger, the data, the scaling). The
transformer's ``Trainer`` and the baselines both begin from a ``Prepared``. ``RunState`` is where a
run stands once it goes."""
from __future__ import annotations

import dataclasses
import json
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
    precision: str  # as resolved here: config.json keeps what was asked (auto resolves afresh on resume)
    start: Start


@dataclass
class RunState:
    """Where a run stands: the counters every checkpoint holds, the summary so far, and the newest
    online evaluation (so that a resume does not redo it). ``metrics_bytes``, the length of
    metrics.jsonl that the state goes with, is the logger's: the trainer adds it."""

    command: str
    phase: str = "pretrain"
    pretrain_done: int = 0
    online_steps: int = 0
    rounds: int = 0
    critic_pretrained: int = 0  # critic-only updates the critics have had
    summary: dict = field(default_factory=dict)
    last_eval: dict | None = None

    def state_dict(self) -> dict:
        # Plain Python values (numpy scalars become floats), which a checkpoint loads with weights_only.
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def load_state_dict(self, state: dict) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, state[f.name])
