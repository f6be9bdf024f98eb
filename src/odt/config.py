"""Every setting of a run, in one dataclass: the command line, the presets and the saved
``config.json`` are all derived from it."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .models.transformer import ModelSettings, ModelSpec
from .schedules import TargetSettings, parse_range

T = TypeVar("T")
PRESET_DIR = Path(__file__).parent / "presets"


class ConfigError(ValueError):
    """A setting the user gave is invalid; the message names it and says how to fix it."""


def check_out_dir(out: Path, overwrite: bool, what: str) -> None:
    """``--out`` of a run or a report: a directory, empty unless ``overwrite`` (nothing is lost)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory for the {what}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{what} directory {out} already exists and is not empty; choose another --out "
                          "or pass --overwrite")


@dataclass
class RunSettings:
    """What to train on, and how the run computes."""

    env: str = "Hopper-v5"
    """Gymnasium environment id used for rollouts and evaluation."""
    dataset: str = "odt/hopper-medium"
    """Offline data: an embedded dataset name, a Minari id, a D4RL-format .hdf5 or an odt .npz file;
    none trains online from scratch (--random-episodes seed the buffer; no pretraining)."""
    random_episodes: int = 20
    """--dataset none: episodes of a uniform random policy that seed the buffer and the observation
    statistics before the first online round."""
    download: bool = False
    """Download a Minari dataset that is not in the local store (the only network access odt makes)."""
    ref_min_score: Optional[float] = None
    """Random-policy return for normalized scores; default the dataset's own, else D4RL's table."""
    ref_max_score: Optional[float] = None
    """Expert return for normalized scores; default the dataset's own, else D4RL's table."""
    algo: Literal["dt", "odt", "vidt", "odt-td3", "sac", "iql"] = "odt"
    """dt: deterministic actor, MSE loss. odt: stochastic actor, NLL - lambda * entropy. vidt: the
    deterministic actor plus TD3 gradients (ViDT). odt-td3: the stochastic ODT actor plus TD3
    gradients. sac, iql: the baselines of the paper's Table 5.1 (`odt baseline`): SAC online from
    scratch, IQL offline then online."""
    seed: int = 0
    """Seed for the model, the sampling of batches and the environments."""
    device: str = "auto"
    """Torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ..."""
    threads: int = 0
    """torch.set_num_threads for the run; 0 keeps torch's default."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16: run the transformer under bfloat16 autocast (the head and losses stay fp32). fp32: on a
    CUDA GPU, matrix products in TF32 (its tensor cores' 10-bit mantissa, fp32 sums). auto: bf16 where
    the hardware makes it faster (a CUDA GPU of compute capability 8+, a CPU with AMX), fp32 elsewhere,
    where bf16 is slower (12x on AVX2, 1.5x with AVX512_BF16 alone); run.log's first line and
    summary.json record the choice and why, and config.json keeps auto, which a resumed run resolves
    afresh on its machine."""
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    """torch.compile the learner's step (inductor, with this mode; reduce-overhead adds CUDA graphs
    on a GPU): the forward with its loss, and the clipping with the optimizer step, each one graph
    with no break. Off by default: on a CPU it measured slower, after a minute of compiling."""
    preset: Optional[str] = None
    """Named preset the defaults came from (paper tables C.1-C.4 or cpu-small); flags override it."""


@dataclass
class OptimSettings:
    """LAMB, its warmup, the temperature lambda, and the scale of returns-to-go."""

    batch_size: int = 256
    """Windows per gradient step (B)."""
    lr: float = 1e-4
    """LAMB learning rate after warmup."""
    weight_decay: float = 5e-4
    """LAMB weight decay."""
    warmup_steps: int = 10_000
    """Linear learning-rate warmup, in updates (counted over pretraining and finetuning)."""
    grad_clip: float = 0.25
    """Gradient-norm clip of the policy."""
    max_bad_updates: int = 10
    """A non-finite loss, gradient norm or lambda skips that update on the device (counted and logged
    when the round's metrics are read); after this many in a row the learner rolls back to its last
    good state (a snapshot at the end of a round without skips, every 100 actor updates or more)."""
    init_lambda: float = 0.1
    """Initial entropy temperature lambda (odt)."""
    lambda_lr: float = 1e-4
    """Adam learning rate of log(lambda)."""
    target_entropy: Optional[float] = None
    """Entropy lower bound beta; default -dim(A), and with discrete actions half of log|A| (a
    categorical's entropy lies in [0, log|A|])."""
    rtg_scale: float = 1000.0
    """Returns-to-go (and targets) are divided by this before entering the model."""


@dataclass
class TD3Settings:
    """The TD3 part of ViDT (vidt, odt-td3): twin critics, target networks, and the RL term in the
    actor loss."""

    rl_alpha: float = 0.1
    """Weight alpha of the RL term, the mean over valid positions of -Q1(s, actor's mean action)."""
    rl_normalize: bool = False
    """Divide the RL term by the batch's mean |Q| (not differentiated), as TD3+BC does."""
    rl_in_pretrain: bool = False
    """Add the RL term during offline pretraining too; the critic trains there either way."""
    policy_delay: int = 2
    """Critic updates per actor update: a round of updates_per_round actor updates makes this many
    times as many critic updates."""
    gamma: float = 0.99
    """Discount of the TD3 target."""
    tau: float = 0.005
    """Polyak rate of the target critics and the target actor."""
    target_noise: float = 0.2
    """Std of the smoothing noise on the target action (TD3), in the [-1, 1] action box."""
    noise_clip: float = 0.5
    """Clip of the target smoothing noise."""
    critic_pretrain_updates: int = 0
    """Critic-only updates on the whole offline dataset as finetuning starts (the actor held; the
    targets' Polyak steps on TD3's rhythm): the critics' bootstrapped horizon grows before their
    gradient drives the actor. A critic step costs about 0.4 of an ODT actor update at cpu-small."""
    critic_lr: float = 1e-3
    """Adam learning rate of the twin critics."""
    critic_hidden: int = 256
    """Width of the critics' two hidden layers."""
    critic_layernorm: bool = False
    """LayerNorm after each hidden layer of the critics."""
    td_reward_shift: float = 0.0
    """Added to every reward in the critics' TD targets only (the return-to-go keeps the
    environment's rewards): -1 with --gamma 0.998 is the AntMaze convention of IQL and ViDT."""


@dataclass
class BaselineSettings:
    """The baselines (--algo sac, iql; `odt baseline`): MLP actor-critics on the same environment,
    data, online budget and evaluations as the transformer runs (--gamma and --tau are shared)."""

    baseline_hidden: int = 256
    """Width of the two hidden layers of every baseline network."""
    baseline_lr: float = 3e-4
    """Adam learning rate of every baseline network."""
    baseline_batch_size: int = 256
    """Transitions per baseline gradient step."""
    baseline_evals: int = 20
    """Evaluations spread evenly over the online budget (--eval-episodes each)."""
    sac_learning_starts: int = 5000
    """SAC: uniform random steps before the first update."""
    iql_offline_updates: int = 100_000
    """IQL: gradient steps on the offline data before going online (then one per environment step)."""
    iql_expectile: float = 0.7
    """IQL: expectile tau of the value loss (0.7 locomotion, 0.9 AntMaze)."""
    iql_temperature: float = 3.0
    """IQL: inverse temperature beta of advantage-weighted regression (3 locomotion, 10 AntMaze)."""


@dataclass
class OnlineSettings:
    """Offline pretraining, then online finetuning (Algorithm 1)."""

    pretrain_updates: int = 5000
    """Gradient updates on the offline dataset before finetuning."""
    pretrain_eval_every: int = 0
    """Evaluate every this many pretraining updates; 0: only at the end."""

    online_steps: int = 200_000
    """Online budget in environment steps; finetuning stops once it is spent."""
    updates_per_round: int = 300
    """Gradient updates after each round of rollouts (I)."""
    episodes_per_round: int = 1
    """Exploration episodes collected per round (the paper: 1), run in parallel."""
    updates_per_step: float = 0.0
    """If > 0, a round makes this many updates per environment step it collected (at least 1),
    instead of updates_per_round: short episodes (random data, from scratch) then get few updates
    rather than a long episode's, and a run's cost follows its step budget."""
    buffer_size: int = 1000
    """Trajectories in the replay buffer (N); seeded with the top-N offline ones."""
    g_online: float = 7200.0
    """Exploration return-to-go target (the paper: 2 x expert return)."""
    g_eval: float = 3600.0
    """Evaluation return-to-go target."""
    eval_every: int = 10
    """Evaluate every this many rounds."""
    eval_episodes: int = 10
    """Episodes per evaluation, run as one vector environment with mean actions."""
    checkpoint_every: int = 10
    """Save a checkpoint every this many rounds (and at the end of each phase)."""


@dataclass
class ToolboxSettings(TargetSettings):
    """The practical toolbox (tutorial sections 3, 5, 7, 9) and the ablations; off by default.
    Schedules run over the online budget: progress = online steps done / --online-steps."""

    target_multiple: Optional[float] = None
    """fixed target = this multiple of the expert return (--ref-max-score); the paper uses 2."""
    eval_target: Literal["fixed", "best"] = "fixed"
    """Evaluation target: fixed --g-eval, or best: the highest return observed so far (offline data
    included). Logged as g_eval in every eval row."""
    noise_std: Optional[float] = None
    """Std of Gaussian noise added to exploration actions in the [-1, 1] action box, then clipped
    to it; default 0.1 for deterministic actors (dt, vidt) and --explore-action mean, else 0 (the
    stochastic actor's own sampling explores). Logged as noise_std."""
    explore_action: Literal["sample", "mean"] = "sample"
    """Exploration actions of a stochastic actor (odt, odt-td3): sampled from it (the paper), or its
    mean action, plus --noise-std where that is set (deterministic actors always use the mean)."""
    noise_schedule: Literal["constant", "linear", "exponential", "cosine"] = "constant"
    """Decay of --noise-std over the online budget: 1, 1 - p, exp(-5 p), (1 + cos(pi p)) / 2."""
    noise_floor: float = 0.0
    """The noise std never falls below this."""
    ensemble: int = 1
    """Policies trained side by side (seeds seed, seed+1, ...; one shared buffer); evaluation acts
    with the mean of their mean actions. Costs this many times the updates."""
    ensemble_mode: Literal["disagreement", "member"] = "disagreement"
    """disagreement: explore with the members' mean action plus noise of std --ensemble-scale x their
    std (logged as ensemble_disagreement); member: each episode follows one member drawn at random."""
    ensemble_scale: float = 1.0
    """disagreement: the noise std per unit of the members' standard deviation."""
    offline_ratio: Optional[str] = None
    """START[:END]: draw this share of every online batch from the whole offline dataset and the rest
    from a FIFO of online trajectories only, linear from START to END over the budget (logged as
    offline_ratio). Default: the paper's single buffer seeded with the top offline trajectories."""
    sampling: Literal["length", "return"] = "length"
    """Trajectory sampling: length-proportional (the paper), or return: priority^alpha, priority the
    return less the buffer's lowest plus 1% of the range."""
    priority_alpha: float = 1.0
    """Exponent of prioritized sampling (0: uniform over trajectories)."""
    reg_weight: float = 0.0
    """Finetuning: weight of sum over tensors of mean((theta - theta_pretrained)^2), logged as reg_loss."""
    finetune_lr: Optional[float] = None
    """Learning rate of finetuning (the tutorial suggests --lr / 10); default --lr."""
    lr_decay: Literal["constant", "linear", "sqrt", "cosine"] = "constant"
    """Decay of the finetuning learning rate over the online budget (sqrt: (1 - p)^0.5)."""
    rollback_drop: Optional[float] = None
    """Roll back to the best checkpoint when an evaluation falls more than this fraction below the
    best (0.1: 10%); written as a rollback_to_best event. The best is always kept in checkpoints/best.pt."""
    rollback_lr_factor: float = 1.0
    """Multiply the learning rate by this at every rollback to the best (0.5 halves it)."""
    early_stop_patience: int = 0
    """Stop finetuning after this many evaluations without a new best (0: never); an early_stop event."""
    hindsight: bool = True
    """Ablation: relabel online trajectories with the returns they achieved (the paper); off:
    with the return-to-go they were rolled out with."""
    tasks: tuple[str, ...] = ()
    """Multi-task: ENV=DATASET[:G_EVAL:G_ONLINE] entries, one model over all (spaces zero-padded to
    the largest, batches mixed across tasks, buffer seeded per task, evaluation per task logged as
    eval_<task>_*); --env and --dataset are then ignored. Targets default to the expert return
    (else the data's best) and twice that. Fixed targets only."""
    buffer_seeding: Literal["top", "random"] = "top"
    """Ablation: seed the online buffer with the top-N offline trajectories by return, or N at random."""

@dataclass
class OutputSettings:
    """Where the run writes, and the run it starts from or continues."""

    out: Optional[Path] = None
    """Run directory; default runs/<env>-<algo>-<seed>-<time>."""
    overwrite: bool = False
    """Allow writing into an existing, non-empty run directory."""
    progress: bool = True
    """Show progress bars and rates on the terminal."""
    wandb: bool = False
    """Also log metrics, config and evaluation curves to Weights & Biases (extra odt[wandb]);
    TensorBoard logs either way."""
    wandb_project: str = "odt"
    """W&B project of --wandb."""
    wandb_mode: Optional[Literal["online", "offline", "disabled"]] = None
    """W&B mode of --wandb: offline writes RUN_DIR/wandb/ without a network (`wandb sync` uploads it),
    disabled logs nothing to W&B. Default: $WANDB_MODE, else online; config.json records the mode used."""
    capture_video: bool = False
    """Record the first episode of every evaluation as RUN_DIR/videos/*.mp4 (at most 1000 frames;
    extra odt[video], off-screen MuJoCo rendering), also to TensorBoard and W&B."""
    init: Optional[Path] = None
    """odt finetune: the run directory (or checkpoint file) of the pretrained model to start from, or
    odt:NAME, a shipped pretrained model (`odt presets` lists them)."""
    restart_optimizers: bool = False
    """odt finetune --init: start LAMB, the warmup and lambda's Adam afresh instead of carrying them
    over from pretraining (the default carries them over, as `odt run` does)."""
    resume: Optional[Path] = None
    """Continue the killed run in this directory from its last checkpoint, with its own config.json
    (other flags are ignored)."""
    extend: Optional[Path] = None
    """Continue this complete run to a larger --online-steps (the total budget), in a copy at --out:
    the same run with a longer budget, from its final checkpoint (other flags are ignored)."""


# The groups are the sections of `odt run --help`; Config holds all their fields, flat (base
# classes listed last-first so that config.json keeps the sections' order).
@dataclass
class Config(OutputSettings, BaselineSettings, ToolboxSettings, OnlineSettings, TD3Settings, OptimSettings,
             ModelSettings, RunSettings):
    """Every setting of a run."""

    GROUPS = (RunSettings, ModelSettings, OptimSettings, TD3Settings, OnlineSettings, ToolboxSettings,
              BaselineSettings, OutputSettings)

    def resolved_action_head(self) -> str:
        if self.action_head != "auto":
            return self.action_head
        return "deterministic" if self.algo in ("dt", "vidt") else "tanh_gaussian"

    @property
    def baseline(self) -> bool:
        """Whether this is a baseline run (odt.baselines) rather than a transformer's."""
        return self.algo in ("sac", "iql")

    @property
    def td3(self) -> bool:
        """Whether the algorithm trains a TD3 critic and adds its gradient to the actor's."""
        return self.algo in ("vidt", "odt-td3")

    @property
    def base_loss(self) -> str:
        """The supervised part of the actor loss: dt (MSE) or odt (NLL - lambda H)."""
        return "dt" if self.algo in ("dt", "vidt") else "odt"

    def offline_ratios(self) -> tuple[float, float]:
        try:
            return parse_range(self.offline_ratio, "offline-ratio")
        except ValueError as e:
            raise ConfigError(f"{e}, e.g. --offline-ratio 0.5:0.1") from None

    def exploration_noise(self) -> float:
        """--noise-std, or its default for the actor's kind."""
        if self.noise_std is not None:
            return self.noise_std
        if self.resolved_action_head() == "categorical":
            return 0.0  # a categorical explores by sampling
        return 0.1 if self.resolved_action_head() == "deterministic" or self.explore_action == "mean" else 0.0

    def round_updates(self, steps: int) -> int:
        """Actor updates after a round that collected ``steps`` environment steps."""
        if self.updates_per_step > 0:
            return max(1, round(steps * self.updates_per_step))
        return self.updates_per_round

    def reference(self) -> Optional[tuple[float, float]]:
        """(random, expert) returns for normalized scores, when set."""
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        return self.ref_min_score, self.ref_max_score

    def group(self, cls: type[T], **given) -> T:
        """A component's settings dataclass, each field taken from the config field of its name
        (``given`` supplies what the config does not hold)."""
        return cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls) if f.name not in given}, **given)

    def model_spec(self, obs_dim: int, act_dim: int, frames: tuple[int, ...] = ()) -> ModelSpec:
        return self.group(ModelSpec, obs_dim=obs_dim, act_dim=act_dim, frames=frames,
                          action_head=self.resolved_action_head())

    def validate(self) -> "Config":
        """Every setting checked, wherever it came from (flags, a preset, config.json, odt.train):
        its type, a finite value in its range (RANGES), and the settings that constrain each other."""
        check_types(vars(self))
        check_ranges(self)
        _check_combinations(self)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"] = list(self.tasks)
        for k in ("out", "init", "resume", "extend"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "Config":
        """A config from settings by name (config.json, a preset, odt.train's mapping): one that is
        unknown or of the wrong type is refused in one line."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"settings must be an object of names to values, got {type(d).__name__} "
                              f"{json.dumps(d, default=str)[:40]}")
        names = {f.name for f in dataclasses.fields(cls)} | {"explore_noise"}
        unknown = sorted(map(str, set(d) - names))
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)} (`odt run --help` lists them)")
        d = dict(d)
        if "explore_noise" in d:  # config.json of runs made before the noise schedules
            noise = d.pop("explore_noise")
            d.setdefault("noise_std", noise if d.get("algo") in ("dt", "vidt") else None)
        check_types(d)
        for k in ("out", "init", "resume", "extend"):
            if d.get(k) is not None:
                d[k] = Path(d[k])
        d["tasks"] = tuple(d.get("tasks", ()))
        return cls(**d)

    def save(self, path: Path) -> None:
        # Written whole or not at all: a run killed here must not leave a torn config.json to resume.
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, validate: bool = False) -> "Config":
        """A run's config.json; ``validate``: every setting checked as a flag's would be (a run to
        continue), not only its type (a run to read)."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:  # ValueError: JSON's, and bytes that are not UTF-8
            raise ConfigError(f"cannot read config {path}: {e}; point at a run directory made by odt") from e
        try:
            cfg = cls.from_dict(raw)
            return cfg.validate() if validate else cfg
        except ConfigError as e:
            raise ConfigError(f"config {path}: {e}; correct the file, or make the run afresh") from None


# The range of every numeric setting, checked after NaN and infinity are refused: "> 0" (positive),
# ">= N", an interval, or "any" (any finite number). A leading noun ("a fraction in (0, 1)") reads
# "is a fraction ..." in the message. tests/test_bad_input.py checks that no numeric setting is missing.
_POSITIVE = ("embed_dim", "n_layer", "n_head", "context_len", "eval_context", "max_ep_len", "entropy_samples",
             "batch_size", "lr", "grad_clip", "max_bad_updates", "init_lambda", "lambda_lr", "rtg_scale",
             "policy_delay", "critic_lr", "critic_hidden", "baseline_hidden", "baseline_lr", "baseline_batch_size",
             "baseline_evals", "iql_temperature", "episodes_per_round", "buffer_size", "eval_every", "eval_episodes",
             "checkpoint_every", "random_episodes", "target_multiple", "finetune_lr")
_NON_NEGATIVE = ("seed", "threads", "weight_decay", "warmup_steps", "rl_alpha", "target_noise", "noise_clip",
                 "critic_pretrain_updates", "sac_learning_starts", "iql_offline_updates", "pretrain_updates",
                 "pretrain_eval_every", "online_steps", "updates_per_round", "noise_std", "noise_floor",
                 "ensemble_scale", "priority_alpha", "reg_weight", "early_stop_patience")
_ANY = ("ref_min_score", "ref_max_score", "log_std_min", "log_std_max", "target_entropy", "td_reward_shift",
        "g_online", "g_eval", "target_beta0", "target_beta1")
RANGES: dict[str, str] = {
    **dict.fromkeys(_POSITIVE, "> 0"), **dict.fromkeys(_NON_NEGATIVE, ">= 0"), **dict.fromkeys(_ANY, "any"),
    "dropout": "in [0, 1)", "gamma": "in (0, 1]", "tau": "in (0, 1]", "iql_expectile": "in (0, 1)",
    "updates_per_step": "in [0, 10000)", "ensemble": ">= 1", "target_window": ">= 1", "target_clip_c": ">= 1",
    "target_p0": "a percentile in [0, 100]", "target_p1": "a percentile in [0, 100]",
    "rollback_drop": "a fraction in (0, 1)", "rollback_lr_factor": "in (0, 1]",
}
_INTERVAL = re.compile(r"([\[(])(\S+), (\S+)([\])])$")


def _in_range(x: float, rule: str) -> bool:
    if rule == "any":
        return True
    if rule.startswith(">"):
        low = float(rule.split()[-1])
        return x >= low if rule.startswith(">=") else x > low
    left, low, high, right = _INTERVAL.search(rule).groups()
    low, high = float(low), float(high)
    return (low <= x if left == "[" else low < x) and (x <= high if right == "]" else x < high)


def _range_text(rule: str) -> str:
    if rule == "> 0":
        return "must be positive"
    return f"is {rule}" if rule.startswith("a ") else f"must be {rule}"


def check_ranges(cfg: "Config") -> None:
    for name, rule in RANGES.items():
        value = getattr(cfg, name)
        if value is None:  # an optional setting left to its default
            continue
        if not math.isfinite(value):
            raise ConfigError(f"--{_flag(name)} must be a finite number, got {value}")
        if not _in_range(value, rule):
            raise ConfigError(f"--{_flag(name)} {_range_text(rule)}, got {value}")


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin is tuple:
        return isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is Path:
        return isinstance(value, (str, os.PathLike))
    return isinstance(value, hint)  # str, bool


def _type_text(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    return {type(None): "null", float: "a number", int: "an integer", bool: "true or false", str: "a string",
            Path: "a path"}.get(hint, "a list of strings")


def check_types(values: dict) -> None:
    """Each setting's value against its declared type (the dataclass annotations): what a flag
    parser would have refused, from config.json or odt.train."""
    for name, value in values.items():
        hint = _hints().get(name)
        if hint is not None and not _fits(value, hint):
            raise ConfigError(f"{name} must be {_type_text(hint)}, got {json.dumps(value, default=repr)[:60]}")


@functools.cache
def _hints() -> dict:
    return typing.get_type_hints(Config)


def _check_combinations(cfg: "Config") -> None:
    """The settings that constrain each other."""
    if cfg.embed_dim % cfg.n_head:
        raise ConfigError(f"--embed-dim ({cfg.embed_dim}) must be divisible by --n-head ({cfg.n_head})")
    if cfg.eval_context > cfg.context_len:
        raise ConfigError(f"--eval-context ({cfg.eval_context}) must be <= --context-len ({cfg.context_len})")
    if cfg.log_std_min >= cfg.log_std_max:
        raise ConfigError("--log-std-min must be below --log-std-max")
    if (cfg.ref_min_score is None) != (cfg.ref_max_score is None):
        raise ConfigError("--ref-min-score and --ref-max-score go together; give both or neither")
    if cfg.ref_min_score is not None and cfg.ref_min_score >= cfg.ref_max_score:
        raise ConfigError(f"--ref-min-score ({cfg.ref_min_score}) must be below --ref-max-score "
                          f"({cfg.ref_max_score})")
    head = cfg.resolved_action_head()
    if head == "categorical" and (cfg.td3 or cfg.baseline):
        why = "TD3's gradient flows through a continuous action" if cfg.td3 else "its library acts in a Box"
        raise ConfigError(f"--algo {cfg.algo} needs continuous actions ({why}); with discrete actions use "
                          "--algo odt or dt")
    if cfg.base_loss == "dt" and head not in ("deterministic", "categorical"):
        raise ConfigError(f"--algo {cfg.algo} trains a deterministic actor; drop --action-head or use "
                          f"--algo {'odt' if cfg.algo == 'dt' else 'odt-td3'}")
    if cfg.base_loss == "odt" and head == "deterministic":
        raise ConfigError(f"--algo {cfg.algo} needs a stochastic --action-head (gaussian, tanh_gaussian or categorical)")
    if head == "categorical" and cfg.ensemble > 1:
        raise ConfigError("--ensemble averages its members' actions, and discrete actions have no mean; drop "
                          "--ensemble with discrete actions")
    if head == "categorical" and (cfg.explore_action == "mean" or cfg.noise_std):
        raise ConfigError("discrete actions explore by sampling from the categorical: drop --explore-action mean and "
                          "--noise-std")
    if cfg.tasks and (cfg.return_target != "fixed" or cfg.eval_target != "fixed" or cfg.target_multiple is not None):
        raise ConfigError("--tasks takes fixed targets per task (ENV=DATASET:G_EVAL:G_ONLINE); drop "
                          "--return-target, --eval-target and --target-multiple")
    if cfg.offline_ratio is not None and not all(0 <= r <= 1 for r in cfg.offline_ratios()):
        raise ConfigError(f"--offline-ratio values are fractions in [0, 1], got {cfg.offline_ratio}")
    if cfg.compile != "off" and cfg.ensemble > 8:  # each member's optimizer is one more compiled graph
        raise ConfigError(f"--compile takes ensembles of up to 8 (torch.compile's recompile limit), got "
                          f"--ensemble {cfg.ensemble}; drop --compile or use fewer members")
    if cfg.capture_video and cfg.tasks:
        raise ConfigError("--capture-video records single-task runs; drop it or --tasks")
    if cfg.baseline and (cfg.tasks or cfg.ensemble > 1):
        raise ConfigError(f"--algo {cfg.algo} is a single-task, single-network baseline; drop --tasks and --ensemble")
    if cfg.algo == "iql" and cfg.dataset == "none":
        raise ConfigError("--algo iql learns from offline data first; give a --dataset (sac runs from scratch)")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _preset_values(name: str, within: tuple[str, ...] = ()) -> dict:
    """A preset file's settings over those of the preset it names as `base`, so that a variant
    states only what it changes."""
    path = PRESET_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())}")
    values = tomllib.loads(path.read_text())
    values.pop("description", None)
    base = values.pop("base", None)
    if base is None:
        return values
    if base in within + (name,):
        raise ConfigError(f"preset {name!r} takes its base from itself through {' -> '.join(within + (name, base))}")
    return {**_preset_values(base, within + (name,)), **values}


def preset(name: str) -> Config:
    """The named preset as a Config (paper tables C.1-C.4, or a machine-sized one)."""
    return Config.from_dict(_preset_values(name))


def preset_description(name: str) -> str:
    return tomllib.loads((PRESET_DIR / f"{name}.toml").read_text()).get("description", "")
