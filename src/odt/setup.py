"""Everything before the loop: validate the config, check the cheap things (flags, paths, run
directories, checkpoints) before any dataset is loaded, build the dataset, the learners, the
environments and the run directory, and hand them to a ``Trainer``. Nothing is written until every
check has passed."""
from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import sys
from datetime import datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from . import hf
from .algos.ensemble import Ensemble
from .algos.learner import Learner
from .baselines import check_baseline, run_baseline
from .checkpoint import build_model, load_from_run, scaling_of
from .config import Config, ConfigError, OptimSettings, TD3Settings, check_out_dir
from .data.generate import collect
from .data.sources import check_episodes, check_matches_env, check_recorded_env, load_dataset
from .data.tasks import load_tasks
from .data.trajectories import TrajectoryDataset
from .envs.make import action_width, frame_shape, make_env_with_horizon, obs_width
from .envs.pool import EnvPool
from .logging import RunLogger, check_wandb, wandb_mode
from .models.critic import critic_shape
from .models.transformer import ModelSettings, ModelSpec
from .precision import apply_precision, resolve_precision
from .run import Prepared, Start, given_settings, refuse_contradicted
from .scaling import Scaling
from .scores import reference_of
from .train import Trainer, execute
from .envs.video import check_video


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise ConfigError(f"--device {name!r} is not a torch device; use auto, cpu or cuda[:N]")
    return name


def _check_dims(state: dict, source: Path, env_id: str, obs_dim: int, act_dim: int) -> None:
    spec = state["spec"]
    if (spec["obs_dim"], spec["act_dim"]) != (obs_dim, act_dim):
        raise ConfigError(f"checkpoint in {source} is for observation/action dimensions "
                          f"{spec['obs_dim']}/{spec['act_dim']}, but {env_id} has {obs_dim}/{act_dim}")


# What a checkpoint's architecture does not fix: dropout trains, and the others act or estimate.
_NOT_ARCHITECTURE = ("dropout", "eval_context", "entropy_samples")


def _from_checkpoint(cfg: Config, start: Start) -> dict:
    """The settings a pretrained checkpoint fixes: its architecture, its actor's kind and, for a
    TD3 run, its critics' shape; and a shipped model's critic warm-up, which counts as done. They
    replace the preset's (config.json records them); a flag the user gave against them is refused."""
    state = start.state
    spec = ModelSpec(**state["spec"])
    fixed = {f.name: getattr(spec, f.name) for f in dataclasses.fields(ModelSettings)
             if f.name not in _NOT_ARCHITECTURE}
    lead = state["ensemble"]["learners"][0]
    deterministic = spec.action_head == "deterministic"
    if deterministic != (cfg.resolved_action_head() == "deterministic"):
        # The actor's kind is the checkpoint's; keep the TD3 part as asked, else as pretrained.
        td3 = cfg.td3 or "td3" in lead
        fixed["algo"] = ("vidt" if td3 else "dt") if deterministic else ("odt-td3" if td3 else "odt")
    td3 = dataclasses.replace(cfg, **fixed).td3
    if td3 and isinstance(lead.get("td3"), dict) and "critic" in lead["td3"]:
        fixed["critic_hidden"], fixed["critic_layernorm"] = critic_shape(lead["td3"]["critic"])
    refuse_contradicted(cfg, fixed, start.given, start.source)
    warmed = int(state["run"]["critic_pretrained"])
    if warmed and td3:
        fixed["critic_pretrain_updates"] = max(0, cfg.critic_pretrain_updates - warmed)
    return fixed


def check_resume(cfg: Config, start: Start) -> None:
    """A run to continue (--resume, --extend): its config.json, its checkpoint and its
    metrics.jsonl must agree, or it is refused before anything is written."""
    _check_made_by(cfg, start.state, start.source / "config.json")
    _check_metrics_mark(start.source / "metrics.jsonl", int(start.state["run"]["metrics_bytes"]))


def _check_made_by(cfg: Config, state: dict, config: Path) -> None:
    """The checkpoint's networks are the ones this config builds: architecture, ensemble, critics."""
    saved, learners = state["spec"], state["ensemble"]["learners"]
    ours = dataclasses.asdict(cfg.model_spec(saved["obs_dim"], saved["act_dim"], ModelSpec(**saved).frames))
    pairs = {name: (ours[name], value) for name, value in saved.items() if name in ours}
    pairs["ensemble"] = (cfg.ensemble, len(learners))
    critics = learners[0].get("td3")
    if (critics is not None) != cfg.td3:
        pairs["algo"] = (cfg.algo, "TD3 critics" if critics is not None else "no TD3 critics")
    elif critics is not None:
        hidden, layernorm = critic_shape(critics["critic"])
        pairs["critic_hidden"] = (cfg.critic_hidden, hidden)
        pairs["critic_layernorm"] = (cfg.critic_layernorm, layernorm)
    for name, (asked, made) in pairs.items():
        if asked != made:
            made = made if name == "algo" else repr(made)
            raise ConfigError(f"{config} has {name} {asked!r}, but the run's checkpoint was made with {made}; "
                              "restore config.json as the run wrote it (a resume continues the run it was)")


def _check_metrics_mark(metrics: Path, mark: int) -> None:
    """metrics.jsonl reaches the checkpoint's mark at the end of a row: the rows after it are cut
    (a resumed run redoes them), and none is missing, so nothing is ever padded."""
    size = metrics.stat().st_size if metrics.is_file() else 0
    ends_a_row = mark == 0
    if 0 < mark <= size:
        with open(metrics, "rb") as f:
            f.seek(mark - 1)
            ends_a_row = f.read(1) == b"\n"
    if not ends_a_row:
        raise ConfigError(f"{metrics} ({size} bytes) does not reach the row its checkpoint ends at (byte {mark}): "
                          f"it was {'cut or removed' if size < mark else 'edited'}; restore it, or make the run afresh "
                          "with --overwrite")


def _load_data(cfg: Config, start: Start, given: TrajectoryDataset | None = None):
    """The dataset (multi-task: every task's, padded; ``given``: one held in memory, odt.train), the
    action space the networks act in, the shape of stacked frames (() for a flat observation), the
    tasks, and what the environment resolves (the action head discrete actions take, the reference
    returns of normalized scores)."""
    resolved: dict = {}
    if cfg.tasks:  # normalized and padded per task: the run itself sees a [-1, 1] box and unit statistics
        dataset, tasks = load_tasks(list(cfg.tasks), cfg, lambda env_id: make_env_with_horizon(env_id, cfg.max_ep_len))
        return dataset, gym.spaces.Box(-1.0, 1.0, (dataset.act_dim,), np.float32), (), tasks, resolved
    env = make_env_with_horizon(cfg.env, cfg.max_ep_len)
    space = env.action_space
    frames = frame_shape(env.observation_space)
    if frames and cfg.td3:
        raise ConfigError(f"--algo {cfg.algo}'s critics read flat observations, and {cfg.env}'s are frames "
                          f"{frames}; use --algo odt or dt")
    resolved.update(_action_head(cfg, space))
    obs_dim, act_dim = obs_width(env.observation_space), action_width(space)
    data_width = 1 if isinstance(space, gym.spaces.Discrete) else act_dim  # a discrete action's data: its index
    if start.state is not None:  # before the dataset: it may take minutes
        _check_dims(start.state, start.source, cfg.env, obs_dim, act_dim)
    if given is not None:  # held in memory: the checks a file gets, against this environment's widths
        dataset = given
        check_episodes(dataset, obs_dim, data_width)
    elif cfg.dataset == "none":  # from scratch: random-policy episodes stand in for the offline data
        dataset = collect(cfg.env, 10**9, cfg.seed, None, name=f"{cfg.random_episodes} random episodes", n_envs=1,
                          log=lambda line: None, episodes_wanted=cfg.random_episodes, horizon=cfg.max_ep_len)
    else:
        check_recorded_env(cfg.dataset, cfg.env, (obs_dim, act_dim))
        dataset = load_dataset(cfg.dataset, download=cfg.download)
    check_matches_env(dataset, env)
    reference = reference_of(cfg.env, (cfg.ref_min_score, cfg.ref_max_score), dataset.metadata)
    if reference is not None:  # config.json records the scale every normalized score used
        resolved["ref_min_score"], resolved["ref_max_score"] = reference
    elif cfg.target_multiple is not None:  # found now, not after pretraining
        raise ConfigError(f"--target-multiple needs the expert return of {cfg.env}; give --ref-min-score "
                          "and --ref-max-score")
    env.close()
    return dataset, space, frames, [], resolved


def _action_head(cfg: Config, space: gym.Space) -> dict:
    """Discrete actions take the categorical head, whatever the algorithm; with it, the settings
    that apply to continuous actions alone are refused now, before any data is loaded."""
    discrete = isinstance(space, gym.spaces.Discrete)
    if discrete and cfg.action_head not in ("auto", "categorical"):
        raise ConfigError(f"--action-head {cfg.action_head}: {cfg.env}'s actions are discrete ({space}); drop "
                          "--action-head (discrete actions take the categorical head)")
    if not discrete and cfg.action_head == "categorical":
        raise ConfigError(f"--action-head categorical is for discrete actions, and {cfg.env}'s are continuous "
                          f"({space}); drop it")
    if not discrete:
        return {}
    dataclasses.replace(cfg, action_head="categorical").validate()
    return {"action_head": "categorical"}


def make_run_dir(cfg: Config) -> Path:
    name = "multitask" if cfg.tasks else cfg.env.replace("/", "_")
    out = cfg.out or Path("runs") / f"{name}-{cfg.algo}-s{cfg.seed}-{datetime.now():%Y%m%d-%H%M%S}"
    check_out_dir(out, cfg.overwrite, "run")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:  # a fresh run: earlier metrics would mix with the new ones
        for name in ("metrics.jsonl", "summary.json", "run.log", "wandb-id"):
            (out / name).unlink(missing_ok=True)
    return out


def prepare(cfg: Config, command: str, start: Start | None = None,
            dataset: TrajectoryDataset | None = None) -> Prepared:
    """Validate everything that can fail before anything is written, then load the data and
    create the run directory (or, resuming, reopen it where its checkpoint stopped): the one path
    of every run, fresh, --init, --resume, --extend and the baselines alike."""
    start = start or Start()
    cfg.validate()
    if cfg.dataset == "none" and command == "pretrain":
        raise ConfigError("odt pretrain needs offline data (--dataset); --dataset none trains from scratch with odt run")
    device = resolve_device(cfg.device)
    precision, precision_why, precision_warning = resolve_precision(cfg.precision, device)
    apply_precision(precision, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Cheap checks first: a wrong run directory or checkpoint must answer at once, not after a
    # dataset was generated (minutes on an empty cache) or downloaded.
    mode = _check_cheap(cfg, command)
    if start.resumes:
        check_resume(cfg, start)
    if start.kind == "init" and start.state is None:
        start = dataclasses.replace(start, state=load_from_run(start.source, "pretrained")[0])
    fixed = _from_checkpoint(cfg, start) if start.kind == "init" else {}
    if not start.resumes and cfg.out is not None:
        check_out_dir(cfg.out, cfg.overwrite, "run")
    dataset, action_space, frames, tasks, resolved = _load_data(cfg, start, dataset)
    if start.kind == "init":
        # The networks' widths: a discrete action's data is one index, its token n wide.
        _check_dims(start.state, start.source, cfg.env, dataset.obs_dim, action_width(action_space))
        resolved.update(fixed)
    scaling = _scaling(start, tasks, dataset, action_space)
    if not scaling.unit_actions:
        for e in dataset.episodes:
            e.actions = scaling.to_unit(e.actions)
    resolved.update(wandb_mode=mode)
    if not start.resumes:  # the directory's default name uses the resolved algorithm
        resolved["out"] = make_run_dir(dataclasses.replace(cfg, **resolved))
    # The one place where the config changes after validation: it records what was resolved.
    for name, value in resolved.items():
        setattr(cfg, name, value)
    if start.resumes and start.source != cfg.out:  # --extend: a copy of the run, which stays as it was
        shutil.copytree(start.source, cfg.out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("summary.json"))
    if start.resumes:  # rows written after the checkpoint are redone from it: drop them, so none is doubled
        with open(cfg.out / "metrics.jsonl", "r+b") as f:
            f.truncate(int(start.state["run"]["metrics_bytes"]))
    if not start.resumes or start.source != cfg.out:
        cfg.save(cfg.out / "config.json")
    logger = RunLogger(cfg.out, cfg.to_dict(), echo=cfg.progress,
                       wandb={"project": cfg.wandb_project, "mode": cfg.wandb_mode} if cfg.wandb else None)
    threads = torch.get_num_threads()
    logger.info(f"odt {command} on {device} in {precision} ({precision_why}), {threads} torch "
                f"thread{'s' if threads != 1 else ''}: {shlex.join(sys.argv)}")
    if precision_warning:
        logger.info(f"warning: {precision_warning}")
    logger.info(f"run directory {cfg.out}")
    logger.info(f"dataset {dataset.name}: {len(dataset.episodes)} episodes, {dataset.n_transitions} steps, "
                f"return mean {dataset.returns().mean():.1f} max {dataset.returns().max():.1f}")
    torch.manual_seed(cfg.seed)
    return Prepared(cfg, command, cfg.out, logger, dataset, scaling, tasks, device, precision, start, frames)


def _check_cheap(cfg: Config, command: str) -> str | None:
    """The checks that need neither data nor a directory; returns the W&B mode."""
    mode = wandb_mode(cfg.wandb_mode) if cfg.wandb else cfg.wandb_mode
    if cfg.wandb:
        check_wandb(mode)
    if cfg.capture_video:
        check_video(cfg.env, "--capture-video")
    if cfg.baseline:
        check_baseline(cfg, command)
    return mode


def _scaling(start: Start, tasks: list, dataset: TrajectoryDataset, space: gym.Space) -> Scaling:
    """The normalizer a checkpoint was trained with, else the data's (multi-task: none, each task
    normalizes its own); the environment's action bounds, or its n discrete actions."""
    if start.state is not None:
        saved = scaling_of(start.state)
        obs_mean, obs_std = saved.obs_mean, saved.obs_std
    elif tasks:
        obs_mean, obs_std = np.zeros(dataset.obs_dim), np.ones(dataset.obs_dim)
    else:
        obs_mean, obs_std = dataset.obs_stats()
    if isinstance(space, gym.spaces.Discrete):
        return Scaling.for_discrete(obs_mean, obs_std, int(space.n))
    return Scaling(obs_mean, obs_std, space.low.astype(np.float32), space.high.astype(np.float32))


def setup(cfg: Config, command: str, start: Start | None = None, dataset: TrajectoryDataset | None = None) -> Trainer:
    """A transformer run's Trainer, everything before its loop done."""
    if cfg.baseline:
        raise ConfigError(f"--algo {cfg.algo} is a baseline, which runs its library's own loop: use "
                          f"`odt baseline {cfg.algo}`")
    return build(prepare(cfg, command, start, dataset))


def build(p: Prepared) -> Trainer:
    """The components, from the config alone, then the state the start gives them."""
    cfg = p.cfg
    rng = np.random.default_rng(cfg.seed)
    torch_gen = torch.Generator(device=p.device).manual_seed(cfg.seed + 1)
    ensemble = _make_ensemble(cfg, p.dataset.obs_dim, p.dataset.act_dim, p.frames, p.device, p.precision, rng)
    trainer = Trainer(p, ensemble, torch_gen, EnvPool(cfg.env, p.tasks, p.dataset.obs_dim, p.dataset.act_dim))
    if p.start.kind == "init":
        _initialise(ensemble, cfg, p.start, p.logger)
    elif p.start.resumes:
        trainer.load_state_dict(p.start.state)
        p.logger.info(f"resumed: {trainer.run.pretrain_done} pretraining updates, round {trainer.run.rounds}, "
                      f"{trainer.run.online_steps} online steps done")
    trainer.run.summary.update(p.start.summary)
    return trainer


def _make_ensemble(cfg: Config, obs_dim: int, act_dim: int, frames: tuple[int, ...], device: str, precision: str,
                   rng: np.random.Generator) -> Ensemble:
    spec = dataclasses.asdict(cfg.model_spec(obs_dim, act_dim, frames))
    optim, td3 = cfg.group(OptimSettings), cfg.group(TD3Settings) if cfg.td3 else None

    def learner() -> Learner:
        return Learner(build_model(spec, device), cfg.base_loss, optim, td3, precision=precision,
                       compile=cfg.compile)

    learners = [learner()]
    for i in range(1, cfg.ensemble):  # separately seeded networks; the first learner keeps the run's seed
        torch.manual_seed(cfg.seed + i)
        learners.append(learner())
    return Ensemble(learners, [rng, *(np.random.default_rng(cfg.seed + i) for i in range(1, cfg.ensemble))])


def _initialise(ensemble: Ensemble, cfg: Config, start: Start, logger: RunLogger) -> None:
    """`odt finetune --init`: as in `odt run` (and the official code, one process for both phases),
    the networks, LAMB's moments, the warmup's position and lambda's Adam carry over; this run's
    --lr and --weight-decay apply from its first update. --restart-optimizers starts them afresh."""
    saved = start.state["ensemble"]["learners"]
    if ensemble.members and len(saved) < cfg.ensemble:
        logger.info(f"warning: {start.source} holds {len(saved)} pretrained network(s) for an ensemble of "
                    f"{cfg.ensemble}; the others start from its first (pretrain with --ensemble {cfg.ensemble})")
    for i, learner in enumerate(ensemble):
        state = saved[i if i < len(saved) else 0]
        if cfg.restart_optimizers:
            learner.load_networks(state)
        else:
            learner.load_state_dict(state)
        learner.updates = int(saved[0]["updates"])
        learner.set_hyperparameters(cfg.lr, cfg.weight_decay, cfg.lambda_lr, cfg.critic_lr)
    lead = ensemble.lead
    logger.info(f"initialised from {start.source} ({lead.updates} pretraining updates, lambda {lead.temperature.lam:.4f}; "
                f"optimizers {'restarted' if cfg.restart_optimizers else 'carried over'})")


def init_start(cfg: Config, command: str, given: list[str]) -> Start:
    """What `odt finetune --init` starts from: a run directory (read once its cheap checks have
    passed), or a Hugging Face model directory converted in memory (``given``: the flags the user
    gave, which the model may not contradict and its config.json does not override). Other
    commands start afresh."""
    if command != "finetune" or cfg.init is None:
        return Start()
    if hf.is_model_dir(cfg.init):
        return hf.finetune_start(cfg, cfg.init, given)
    return Start("init", cfg.init, given=given_settings(given))


def run_command(cfg: Config, command: str, pretrain: bool, finetune: bool, start: Start | None = None,
                dataset: TrajectoryDataset | None = None) -> dict:
    """`odt pretrain`, `odt finetune`, `odt run`, `--resume`, `--extend`: set up, then run the phases."""
    p = prepare(cfg, command, start, dataset)
    if cfg.baseline:
        return run_baseline(p)
    return execute(build(p), pretrain, finetune)


def _check_run_dir(run_dir: Path) -> None:
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json); give the --out of an odt run")


def _check_device_here(cfg: Config, run_dir: Path) -> None:
    """A run continued on this machine resolves its device and precision afresh; one that names a
    device this machine lacks says how to continue it here (flags do not apply to a resume)."""
    try:
        resolve_device(cfg.device)
    except ConfigError:
        raise ConfigError(f"{run_dir} asks for --device {cfg.device} (its config.json), which this machine lacks; "
                          f"set \"device\": \"auto\" in {run_dir / 'config.json'} to continue it here") from None


def read_summary(run_dir: Path) -> dict:
    """A complete run's summary.json; a torn or foreign one is named, with what to do."""
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        summary = e
    if not isinstance(summary, dict) or not isinstance(summary.get("online_steps", 0), int):
        raise ConfigError(f"{path} is not a summary odt wrote ({str(summary).splitlines()[0][:60]}): the run did not "
                          "finish writing it; remove it, then --resume the run to finish it")
    return summary


def resume_run(run_dir: Path) -> dict:
    """``--resume RUN_DIR``: continue a killed run from its newest intact checkpoint, with its own
    config.json; what the original command was decides what remains to do. Everything is read and
    checked before the run directory is touched."""
    _check_run_dir(run_dir)
    if (run_dir / "summary.json").exists():
        read_summary(run_dir)
        raise ConfigError(f"run {run_dir} is complete (it has summary.json); there is nothing to resume")
    cfg = Config.load(run_dir / "config.json", validate=True)
    if cfg.baseline:
        raise ConfigError(f"{run_dir} is a {cfg.algo} baseline run, which keeps no resumable state; run it again "
                          "with --overwrite")
    _check_device_here(cfg, run_dir)
    if not any((run_dir / "checkpoints").glob("*.pt")):
        raise ConfigError(f"{run_dir} has no checkpoint: the run was stopped before it saved one, so there is "
                          "nothing to resume; start it afresh with the command that made it and --overwrite")
    state, _ = load_from_run(run_dir, "latest")
    if "generators" not in state:
        raise ConfigError(f"the checkpoints of {run_dir} predate --resume; start the run again")
    cfg.out, cfg.overwrite = run_dir, False
    original = state["run"]["command"]
    return run_command(cfg, original, pretrain=original in ("run", "pretrain"), finetune=original in ("run", "finetune"),
                       start=Start("resume", run_dir, state))


def extend_run(run_dir: Path, online_steps: int, out: Path | None) -> dict:
    """``--extend RUN_DIR --online-steps N --out NEW``: a complete run continued to a budget of N
    online steps, in a copy (made once every check has passed), so that RUN_DIR stays as it was. The copy starts from RUN_DIR's final
    checkpoint (learner, critics, buffer, random generators, metrics so far) and writes the
    metrics.jsonl and summary.json of one N-step run. Its one difference from a run that had N from
    the start: RUN_DIR's last round was cut at its budget, and its closing evaluation stays in the
    metrics. Only budget-free schedules continue the same way, so the others are refused."""
    if out is None:
        raise ConfigError("--extend writes a new run directory and leaves the original as it is; give --out NEW")
    _check_run_dir(run_dir)
    if not (run_dir / "summary.json").is_file():
        raise ConfigError(f"run {run_dir} is not complete (no summary.json); continue it with --resume first")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty directory; --extend writes a new run, "
                          "choose another --out")
    cfg = Config.load(run_dir / "config.json", validate=True)
    _check_device_here(cfg, run_dir)
    done = read_summary(run_dir)
    if cfg.baseline or cfg.online_steps == 0:
        raise ConfigError(f"{run_dir} has no online phase to continue ({cfg.algo}, --online-steps "
                          f"{cfg.online_steps}); finetune it with `odt finetune --init {run_dir}`")
    did = int(done.get("online_steps", cfg.online_steps))
    if online_steps <= did:
        raise ConfigError(f"--online-steps {online_steps} is not beyond the {did} steps {run_dir} has done; "
                          "give the larger total budget")
    budget_bound = {"--noise-schedule": cfg.noise_schedule != "constant", "--lr-decay": cfg.lr_decay != "constant",
                    "--return-target": cfg.return_target != "fixed",
                    "--offline-ratio": cfg.offline_ratio is not None and len(set(cfg.offline_ratios())) > 1}
    bound = [flag for flag, b in budget_bound.items() if b]
    if bound:
        raise ConfigError(f"{run_dir} uses {', '.join(bound)} on a schedule over its budget, which an extension "
                          f"would stretch; run afresh with --online-steps {online_steps}")
    state, path = load_from_run(run_dir, "final")
    if path.stem not in ("final", "final.prev") or "generators" not in state:
        raise ConfigError(f"{run_dir} has no final checkpoint with a resume state (found {path.name}); "
                          "run it again with this version of odt")
    cfg.out = out
    cfg.overwrite = False
    cfg.online_steps = online_steps
    extended_from = {"run": str(run_dir), "online_steps": did, "command": done.get("command"),
                     "wall_time_s": done.get("wall_time_s")}
    trainer = setup(cfg, state["run"]["command"], Start("resume", run_dir, state, {"extended_from": extended_from}))
    trainer.logger.info(f"extending {run_dir} from {trainer.run.online_steps} to {online_steps} online steps")
    return execute(trainer, pretrain=False, finetune=True)
