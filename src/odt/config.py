"""Every setting of a run, in one dataclass: the command line, the presets and the saved
``config.json`` are all derived from it."""
from __future__ import annotations

import dataclasses
import json
import sys
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
    """bf16: run the transformer under bfloat16 autocast (the head and losses stay fp32). auto: bf16
    where the hardware makes it faster (a CUDA GPU of compute capability 8+, a CPU with AMX), fp32
    elsewhere, where bf16 is slower (12x on AVX2, 1.5x with AVX512_BF16 alone); config.json and
    run.log's first line record the choice and why."""
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
    """A non-finite loss, gradient norm or lambda skips that update (logged); after this many in a
    row the learner rolls back to its last good state (a snapshot every 100 actor updates)."""
    init_lambda: float = 0.1
    """Initial entropy temperature lambda (odt)."""
    lambda_lr: float = 1e-4
    """Adam learning rate of log(lambda)."""
    target_entropy: Optional[float] = None
    """Entropy lower bound beta; default -dim(A)."""
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

    def model_spec(self, obs_dim: int, act_dim: int) -> ModelSpec:
        return self.group(ModelSpec, obs_dim=obs_dim, act_dim=act_dim, action_head=self.resolved_action_head())

    def validate(self) -> "Config":
        positive = ["embed_dim", "n_layer", "n_head", "context_len", "eval_context", "batch_size",
                    "max_ep_len", "entropy_samples", "buffer_size", "eval_episodes",
                    "episodes_per_round", "eval_every", "checkpoint_every", "policy_delay", "critic_hidden",
                    "max_bad_updates", "random_episodes", "baseline_hidden", "baseline_batch_size",
                    "baseline_evals"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        for name in ["pretrain_updates", "online_steps", "updates_per_round", "warmup_steps",
                     "pretrain_eval_every", "threads"]:
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.updates_per_step < 1e4:
            raise ConfigError(f"--updates-per-step must be in [0, 10000) (0: use --updates-per-round), "
                              f"got {self.updates_per_step}")
        if self.embed_dim % self.n_head:
            raise ConfigError(f"--embed-dim ({self.embed_dim}) must be divisible by --n-head ({self.n_head})")
        if self.eval_context > self.context_len:
            raise ConfigError(f"--eval-context ({self.eval_context}) must be <= --context-len ({self.context_len})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0 or self.rtg_scale <= 0 or self.grad_clip <= 0 or self.lambda_lr <= 0:
            raise ConfigError("--lr, --lambda-lr, --rtg-scale and --grad-clip must be positive")
        if self.init_lambda <= 0:
            raise ConfigError(f"--init-lambda must be positive, got {self.init_lambda}")
        if self.log_std_min >= self.log_std_max:
            raise ConfigError("--log-std-min must be below --log-std-max")
        if (self.ref_min_score is None) != (self.ref_max_score is None):
            raise ConfigError("--ref-min-score and --ref-max-score go together; give both or neither")
        if self.ref_min_score is not None and self.ref_min_score >= self.ref_max_score:
            raise ConfigError(f"--ref-min-score ({self.ref_min_score}) must be below --ref-max-score "
                              f"({self.ref_max_score})")
        self._validate_algo()
        self._validate_toolbox()
        if self.baseline:
            self._validate_baseline()
        return self

    def _validate_algo(self) -> None:
        if self.base_loss == "dt" and self.resolved_action_head() != "deterministic":
            raise ConfigError(f"--algo {self.algo} trains a deterministic actor; drop --action-head or use "
                              f"--algo {'odt' if self.algo == 'dt' else 'odt-td3'}")
        if self.base_loss == "odt" and self.resolved_action_head() == "deterministic":
            raise ConfigError(f"--algo {self.algo} needs a stochastic --action-head (gaussian or tanh_gaussian)")
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ConfigError(f"--gamma and --tau must be in (0, 1], got {self.gamma} and {self.tau}")

    def _validate_toolbox(self) -> None:
        for name in ("rl_alpha", "target_noise", "noise_clip", "noise_floor", "ensemble_scale", "priority_alpha",
                     "reg_weight", "early_stop_patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.noise_std is not None and self.noise_std < 0:
            raise ConfigError(f"--noise-std must be >= 0, got {self.noise_std}")
        for name in ("ensemble", "target_window"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        for name in ("target_p0", "target_p1"):
            if not 0 <= getattr(self, name) <= 100:
                raise ConfigError(f"--{_flag(name)} is a percentile in [0, 100], got {getattr(self, name)}")
        if self.target_clip_c < 1:
            raise ConfigError(f"--target-clip-c must be >= 1 (1: no optimism), got {self.target_clip_c}")
        if self.target_multiple is not None and self.target_multiple <= 0:
            raise ConfigError(f"--target-multiple must be positive, got {self.target_multiple}")
        if self.finetune_lr is not None and self.finetune_lr <= 0:
            raise ConfigError(f"--finetune-lr must be positive, got {self.finetune_lr}")
        if self.rollback_drop is not None and not 0 < self.rollback_drop < 1:
            raise ConfigError(f"--rollback-drop is a fraction in (0, 1), got {self.rollback_drop}")
        if not 0 < self.rollback_lr_factor <= 1:
            raise ConfigError(f"--rollback-lr-factor must be in (0, 1], got {self.rollback_lr_factor}")
        if self.tasks and (self.return_target != "fixed" or self.eval_target != "fixed"
                           or self.target_multiple is not None):
            raise ConfigError("--tasks takes fixed targets per task (ENV=DATASET:G_EVAL:G_ONLINE); drop "
                              "--return-target, --eval-target and --target-multiple")
        if self.offline_ratio is not None:
            ratio = self.offline_ratios()
            if not all(0 <= r <= 1 for r in ratio):
                raise ConfigError(f"--offline-ratio values are fractions in [0, 1], got {self.offline_ratio}")
        if self.compile != "off" and self.ensemble > 8:  # each member's optimizer is one more compiled graph
            raise ConfigError(f"--compile takes ensembles of up to 8 (torch.compile's recompile limit), got "
                              f"--ensemble {self.ensemble}; drop --compile or use fewer members")
        if self.critic_pretrain_updates < 0:
            raise ConfigError(f"--critic-pretrain-updates must be >= 0, got {self.critic_pretrain_updates}")
        if self.critic_lr <= 0:
            raise ConfigError(f"--critic-lr must be positive, got {self.critic_lr}")
        if self.capture_video and self.tasks:
            raise ConfigError("--capture-video records single-task runs; drop it or --tasks")

    def _validate_baseline(self) -> None:
        if self.tasks or self.ensemble > 1:
            raise ConfigError(f"--algo {self.algo} is a single-task, single-network baseline; drop --tasks and --ensemble")
        if self.baseline_lr <= 0 or self.sac_learning_starts < 0 or self.iql_offline_updates < 0:
            raise ConfigError("--baseline-lr must be positive, --sac-learning-starts and --iql-offline-updates >= 0")
        if not 0 < self.iql_expectile < 1 or self.iql_temperature <= 0:
            raise ConfigError(f"--iql-expectile must be in (0, 1) and --iql-temperature positive, got "
                              f"{self.iql_expectile} and {self.iql_temperature}")
        if self.algo == "iql" and self.dataset == "none":
            raise ConfigError("--algo iql learns from offline data first; give a --dataset (sac runs from scratch)")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"] = list(self.tasks)
        for k in ("out", "init", "resume", "extend"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)} | {"explore_noise"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; see `odt run --help`")
        d = dict(d)
        if "explore_noise" in d:  # config.json of runs made before the noise schedules
            noise = d.pop("explore_noise")
            d.setdefault("noise_std", noise if d.get("algo") in ("dt", "vidt") else None)
        for k in ("out", "init", "resume", "extend"):
            if d.get(k) is not None:
                d[k] = Path(d[k])
        d["tasks"] = tuple(d.get("tasks", ()))
        return cls(**d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Config":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}; point at a run directory made by odt") from e


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
