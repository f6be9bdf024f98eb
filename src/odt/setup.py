"""Everything before the loop: validate the config, check the cheap things (flags, paths, run
directories, checkpoints) before any dataset is loaded, build the dataset, the learners, the
environments and the run directory, and hand them to a ``Trainer``. Nothing is written until every
check has passed."""
from __future__ import annotations

import dataclasses
import functools
import json
import shlex
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import resume
from .algos.ensemble import Ensemble
from .algos.learner import Learner, LearnerSettings
from .baselines import check_baseline, run_baseline
from .checkpoint import build_model, load_from_run
from .config import Config, ConfigError, TD3Settings, check_out_dir
from .data.generate import collect
from .data.sources import check_episodes, check_matches_env, load_dataset
from .data.trajectories import TrajectoryDataset
from .envs.make import make_env_with_horizon, scale_actions_to_unit
from .envs.multitask import load_tasks
from .envs.pool import EnvPool
from .logging import RunLogger, check_wandb, wandb_mode
from .models.transformer import ModelSpec
from .precision import resolve_precision
from .scores import reference_of
from .train import Trainer, execute
from .video import check_video


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


def _from_checkpoint(cfg: Config, state: dict) -> dict:
    """The settings a pretrained checkpoint fixes: its architecture, and its actor's kind."""
    spec = ModelSpec(**state["spec"])
    # Every architecture setting but the data's dimensions and dropout (a training setting).
    resolved = {f.name: getattr(spec, f.name) for f in dataclasses.fields(ModelSpec)
                if f.name not in ("obs_dim", "act_dim", "dropout")}
    deterministic = spec.action_head == "deterministic"
    if deterministic != (cfg.resolved_action_head() == "deterministic"):
        # The actor's kind is the checkpoint's; keep the TD3 part as asked, else as pretrained.
        td3 = cfg.td3 or "td3" in state["learner"]
        resolved["algo"] = ("vidt" if td3 else "dt") if deterministic else ("odt-td3" if td3 else "odt")
    return resolved


def _load_data(cfg: Config, init_state: dict | None, init_from: Path | None, given: TrajectoryDataset | None = None):
    """The dataset (multi-task: every task's, padded; ``given``: one held in memory, odt.train), the
    action bounds, the tasks, and what the environment resolves (the reference returns of
    normalized scores)."""
    resolved: dict = {}
    if cfg.tasks:  # normalized and padded per task: the run itself sees a [-1, 1] box and unit statistics
        dataset, tasks = load_tasks(list(cfg.tasks), cfg, lambda env_id: make_env_with_horizon(env_id, cfg.max_ep_len))
        act_low, act_high = -np.ones(dataset.act_dim, np.float32), np.ones(dataset.act_dim, np.float32)
        return dataset, act_low, act_high, tasks, resolved
    env = make_env_with_horizon(cfg.env, cfg.max_ep_len)
    if init_state is not None:  # before the dataset: it may take minutes
        _check_dims(init_state, init_from, cfg.env, env.observation_space.shape[0], env.action_space.shape[0])
    if given is not None:  # held in memory: the checks a file gets, against this environment's widths
        dataset = given
        check_episodes(dataset, env.observation_space.shape[0], env.action_space.shape[0])
    elif cfg.dataset == "none":  # from scratch: random-policy episodes stand in for the offline data
        dataset = collect(cfg.env, 10**9, cfg.seed, None, name=f"{cfg.random_episodes} random episodes", n_envs=1,
                          log=lambda line: None, episodes_wanted=cfg.random_episodes, horizon=cfg.max_ep_len)
    else:
        dataset = load_dataset(cfg.dataset, download=cfg.download)
    check_matches_env(dataset, env)
    reference = reference_of(cfg.env, (cfg.ref_min_score, cfg.ref_max_score), dataset.metadata)
    if reference is not None:  # config.json records the scale every normalized score used
        resolved["ref_min_score"], resolved["ref_max_score"] = reference
    elif cfg.target_multiple is not None:  # found now, not after pretraining
        raise ConfigError(f"--target-multiple needs the expert return of {cfg.env}; give --ref-min-score "
                          "and --ref-max-score")
    act_low, act_high = env.action_space.low.astype(np.float32), env.action_space.high.astype(np.float32)
    env.close()
    return dataset, act_low, act_high, [], resolved


def make_run_dir(cfg: Config) -> Path:
    name = "multitask" if cfg.tasks else cfg.env.replace("/", "_")
    out = cfg.out or Path("runs") / f"{name}-{cfg.algo}-s{cfg.seed}-{datetime.now():%Y%m%d-%H%M%S}"
    check_out_dir(out, cfg.overwrite, "run")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:  # a fresh run: earlier metrics would mix with the new ones
        for name in ("metrics.jsonl", "summary.json", "run.log", "wandb-id"):
            (out / name).unlink(missing_ok=True)
    return out


def setup(cfg: Config, command: str, init_from: Path | None = None, checkpoint: dict | None = None,
          dataset: TrajectoryDataset | None = None) -> Trainer | Callable[[], dict]:
    """Validate everything that can fail before anything is written, then create the run directory
    (or, given the ``checkpoint`` of a killed run, reopen its directory where it stopped). A
    baseline's run comes back as the call that runs it."""
    cfg.validate()
    if cfg.dataset == "none" and command == "pretrain":
        raise ConfigError("odt pretrain needs offline data (--dataset); --dataset none trains from scratch with odt run")
    device = resolve_device(cfg.device)
    precision, precision_why, precision_warning = resolve_precision(cfg.precision, device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Cheap checks first: a wrong run directory or checkpoint must answer at once, not after a
    # dataset was generated (minutes on an empty cache) or downloaded.
    mode = wandb_mode(cfg.wandb_mode) if cfg.wandb else cfg.wandb_mode
    if cfg.wandb:
        check_wandb(mode)
    if cfg.capture_video:
        check_video(cfg.env, "--capture-video")
    if cfg.baseline:
        check_baseline(cfg, command)
    init_state = checkpoint
    if checkpoint is None and init_from is not None:
        init_state, _ = load_from_run(init_from, "pretrained", device)
    if checkpoint is None and cfg.out is not None:
        check_out_dir(cfg.out, cfg.overwrite, "run")
    dataset, act_low, act_high, tasks, resolved = _load_data(cfg, init_state if checkpoint is None else None,
                                                              init_from, dataset)
    if checkpoint is None and init_from is not None:
        _check_dims(init_state, init_from, cfg.env, dataset.obs_dim, dataset.act_dim)
        resolved.update(_from_checkpoint(cfg, init_state))
        warmed = int(init_state.get("extra", {}).get("critic_pretrained", 0))
        if warmed and cfg.td3:  # a shipped model's critics come warmed up: those updates count as done
            resolved["critic_pretrain_updates"] = max(0, cfg.critic_pretrain_updates - warmed)
    if not np.allclose(act_low, -1) or not np.allclose(act_high, 1):
        for e in dataset.episodes:
            e.actions = scale_actions_to_unit(e.actions, act_low, act_high)
    resolved["precision"] = precision
    resolved["wandb_mode"] = mode
    if checkpoint is None:  # the directory's default name uses the resolved algorithm
        resolved["out"] = make_run_dir(dataclasses.replace(cfg, **resolved))
    # The one place where the config changes after validation: it records what was resolved.
    for name, value in resolved.items():
        setattr(cfg, name, value)
    if checkpoint is None:
        cfg.save(cfg.out / "config.json")
    else:
        # Rows written after the checkpoint are redone from it: drop them, so none is doubled.
        with open(cfg.out / "metrics.jsonl", "r+b") as f:
            f.truncate(int(checkpoint["extra"]["resume"]["metrics_bytes"]))
    run_dir = cfg.out
    logger = RunLogger(run_dir, cfg.to_dict(), echo=cfg.progress,
                       wandb={"project": cfg.wandb_project, "mode": cfg.wandb_mode} if cfg.wandb else None)
    threads = torch.get_num_threads()
    logger.info(f"odt {command} on {device} in {precision} ({precision_why}), {threads} torch "
                f"thread{'s' if threads != 1 else ''}: {shlex.join(sys.argv)}")
    if precision_warning:
        logger.info(f"warning: {precision_warning}")
    logger.info(f"run directory {run_dir}")
    logger.info(f"dataset {dataset.name}: {len(dataset.episodes)} episodes, {dataset.n_transitions} steps, "
                f"return mean {dataset.returns().mean():.1f} max {dataset.returns().max():.1f}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    torch_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    if init_state is not None:
        obs_mean, obs_std = init_state["obs_mean"].cpu().numpy(), init_state["obs_std"].cpu().numpy()
    elif tasks:
        obs_mean, obs_std = np.zeros(dataset.obs_dim, np.float32), np.ones(dataset.obs_dim, np.float32)
    else:
        obs_mean, obs_std = dataset.obs_stats()
    if cfg.baseline:
        return functools.partial(run_baseline, cfg, run_dir, logger, dataset, obs_mean, obs_std, act_low, act_high,
                                 device)
    ensemble = _make_ensemble(cfg, dataset.obs_dim, dataset.act_dim, device, rng)
    if checkpoint is None and init_state is not None:
        _initialise(ensemble, cfg, init_state, init_from, logger)
    trainer = Trainer(cfg, run_dir, logger, dataset, ensemble, obs_mean, obs_std, act_low, act_high, device,
                      torch_gen, EnvPool(cfg.env, tasks, dataset.obs_dim, dataset.act_dim), command=command)
    if checkpoint is not None:
        trainer.learner.load_state_dict(checkpoint["learner"])  # everything: optimizers, schedules, critics
        resume.restore(trainer, checkpoint)
        logger.info(f"resumed: {trainer.pretrain_done} pretraining updates, round {trainer.rounds}, "
                    f"{trainer.online_steps} online steps done")
    return trainer


def _make_ensemble(cfg: Config, obs_dim: int, act_dim: int, device: str, rng: np.random.Generator) -> Ensemble:
    spec = cfg.model_spec(obs_dim, act_dim).__dict__
    settings = cfg.group(LearnerSettings)
    td3 = cfg.group(TD3Settings) if cfg.td3 else None
    learners = [Learner(build_model(spec, device), cfg.base_loss, settings, td3)]
    for i in range(1, cfg.ensemble):  # separately seeded networks; the first learner keeps the run's seed
        torch.manual_seed(cfg.seed + i)
        learners.append(Learner(build_model(spec, device), cfg.base_loss, settings, td3))
    return Ensemble(learners, [rng, *(np.random.default_rng(cfg.seed + i) for i in range(1, cfg.ensemble))])


def _initialise(ensemble: Ensemble, cfg: Config, init_state: dict, init_from: Path, logger: RunLogger) -> None:
    """`odt finetune --init`: as in `odt run` (and the official code, one process for both phases),
    the networks, LAMB's moments, the warmup's position and lambda's Adam carry over; this run's
    --lr and --weight-decay apply from its first update. --restart-optimizers starts them afresh."""
    saved = [init_state["learner"], *init_state.get("extra", {}).get("ensemble", [])]
    if ensemble.members and len(saved) < cfg.ensemble:
        logger.info(f"warning: {init_from} holds {len(saved)} pretrained network(s) for an ensemble of "
                    f"{cfg.ensemble}; the others start from its first (pretrain with --ensemble {cfg.ensemble})")
    for i, learner in enumerate(ensemble):
        learner.load_state_dict(saved[i if i < len(saved) else 0], model_only=cfg.restart_optimizers)
        learner.updates = int(init_state["learner"]["updates"])
        learner.set_hyperparameters(cfg.lr, cfg.weight_decay, cfg.lambda_lr, cfg.critic_lr)
    lead = ensemble.lead
    logger.info(f"initialised from {init_from} ({lead.updates} pretraining updates, lambda {lead.lam:.4f}; "
                f"optimizers {'restarted' if cfg.restart_optimizers else 'carried over'})")


def run_command(cfg: Config, command: str, pretrain: bool, finetune: bool, init_from: Path | None = None) -> dict:
    """`odt pretrain`, `odt finetune`, `odt run`: set up, then run the phases."""
    job = setup(cfg, command, init_from)
    return job() if cfg.baseline else execute(job, pretrain, finetune)


def _check_run_dir(run_dir: Path) -> None:
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json); give the --out of an odt run")


def resume_run(run_dir: Path) -> dict:
    """``--resume RUN_DIR``: continue a killed run from its newest intact checkpoint, with its own
    config.json; what the original command was decides what remains to do."""
    _check_run_dir(run_dir)
    if (run_dir / "summary.json").is_file():
        raise ConfigError(f"run {run_dir} is complete (it has summary.json); there is nothing to resume")
    cfg = Config.load(run_dir / "config.json")
    if cfg.baseline:
        raise ConfigError(f"{run_dir} is a {cfg.algo} baseline run, which keeps no resumable state; run it again "
                          "with --overwrite")
    state, _ = load_from_run(run_dir, "latest", resolve_device(cfg.device))
    rs = state.get("extra", {}).get("resume")
    if rs is None:
        raise ConfigError(f"the checkpoints of {run_dir} predate --resume; start the run again")
    cfg.out, cfg.overwrite = run_dir, False
    original = rs["command"]
    return execute(setup(cfg, original, checkpoint=state), pretrain=original in ("run", "pretrain"),
                   finetune=original in ("run", "finetune"))


def extend_run(run_dir: Path, online_steps: int, out: Path | None) -> dict:
    """``--extend RUN_DIR --online-steps N --out NEW``: a complete run continued to a budget of N
    online steps, in a copy, so that RUN_DIR stays as it was. The copy starts from RUN_DIR's final
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
    cfg = Config.load(run_dir / "config.json")
    done = json.loads((run_dir / "summary.json").read_text())
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
    state, path = load_from_run(run_dir, "final", resolve_device(cfg.device))
    if path.stem not in ("final", "final.prev") or "resume" not in state.get("extra", {}):
        raise ConfigError(f"{run_dir} has no final checkpoint with a resume state (found {path.name}); "
                          "run it again with this version of odt")
    shutil.copytree(run_dir, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("summary.json"))
    cfg.out, cfg.overwrite, cfg.online_steps = out, False, online_steps
    cfg.save(out / "config.json")
    trainer = setup(cfg, state["extra"]["resume"]["command"], checkpoint=state)
    trainer.summary["extended_from"] = {"run": str(run_dir), "online_steps": did,
                                        "command": done.get("command"), "wall_time_s": done.get("wall_time_s")}
    trainer.logger.info(f"extending {run_dir} from {trainer.online_steps} to {online_steps} online steps")
    return execute(trainer, pretrain=False, finetune=True)
