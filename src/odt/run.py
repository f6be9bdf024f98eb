"""What a run is before its loop starts: ``Start`` says what it starts from, ``Prepared`` holds what
setup made (the resolved config, the run directory and its logger, the data, the scaling). The
transformer's ``Trainer`` and the baselines both begin from a ``Prepared``. ``RunState`` is where a
run stands once it goes."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config, ConfigError
from .data.trajectories import TrajectoryDataset
from .envs.multitask import Task
from .logging import RunLogger
from .scaling import Scaling


@dataclass
class Start:
    """fresh: nothing loaded. init (`odt finetune --init`): a pretrained checkpoint's networks (and,
    unless --restart-optimizers, their optimizers), read from ``source`` or given as ``state`` (a
    Hugging Face model, converted in memory). resume (``--resume``, ``--extend``): the run's own
    checkpoint, every component's state; ``summary`` adds entries to the run's summary. ``given``:
    the settings the user named (flags, odt.train's keywords), which a checkpoint may not
    contradict."""

    kind: str = "fresh"
    source: Path | None = None
    state: dict | None = None
    summary: dict = field(default_factory=dict)
    given: frozenset[str] = frozenset()

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
    frames: tuple[int, ...] = ()  # stacked frames' (C, H, W), for the convolutions; () for a flat state


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


def given_settings(args: Iterable[str]) -> frozenset[str]:
    """The settings that flags name (``--embed-dim 256``, ``--embed-dim=256``, ``--no-progress``)."""
    names = {a[2:].split("=", 1)[0].replace("-", "_") for a in args if a.startswith("--")}
    return frozenset(names | {n[3:] for n in names if n.startswith("no_")})  # --no-timestep-embedding


def refuse_contradicted(cfg: Config, fixed: dict, given: frozenset[str], source) -> None:
    """A pretrained model fixes settings (``fixed``: its architecture, its actor's kind): one the
    user gave otherwise is refused in one line, never overridden unsaid."""
    for name, value in fixed.items():
        asked = cfg.resolved_action_head() if name == "action_head" else getattr(cfg, name)
        if name in given and asked != value:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {asked} contradicts the pretrained model {source}, which has {name} {value}; "
                              f"drop {flag} (finetuning keeps the model's), or pretrain a model with it")
