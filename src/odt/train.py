"""The one loop. Pretraining and finetuning are the same updates on different buffers: offline,
the buffer is the whole dataset and no rollouts are made; online (Algorithm 1), each round rolls
out with g_online, adds the trajectories to the FIFO buffer, then makes I updates."""
from __future__ import annotations

import json
import shlex
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from .algos.learner import Learner, TD3Settings
from .checkpoint import build_model, load_from_run, save_checkpoint
from .config import Config, ConfigError
from .data.buffer import ReplayBuffer
from .data.sources import check_matches_env, load_dataset
from .data.trajectories import TrajectoryDataset, flatten_episodes, split_episodes
from .logging import Progress, RunLogger, fmt_time
from .models.transformer import ModelSpec
from .rollout import Policy, make_vector_env, rollout, scale_actions_to_unit
from .scores import reference_of, return_stats


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda") or name == "mps"):
        raise ConfigError(f"--device {name!r} is not a torch device; use auto, cpu or cuda[:N]")
    return name


def make_env_checked(env_id: str) -> gym.Env:
    try:
        return gym.make(env_id)
    except gym.error.Error as e:
        raise ConfigError(f"unknown environment {env_id!r} ({str(e).splitlines()[0]}); "
                          "give a Gymnasium id such as Hopper-v5") from e


def make_run_dir(cfg: Config, command: str) -> Path:
    out = cfg.out or Path("runs") / f"{cfg.env}-{cfg.algo}-s{cfg.seed}-{datetime.now():%Y%m%d-%H%M%S}"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory path")
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise ConfigError(f"run directory {out} already exists and is not empty; choose another --out "
                          "or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    if cfg.overwrite:  # a fresh run: earlier metrics would mix with the new ones
        for name in ("metrics.jsonl", "summary.json", "run.log"):
            (out / name).unlink(missing_ok=True)
    cfg.out = out
    return out


@dataclass
class Run:
    """Everything one run holds: settings, data, learner, and where it writes."""

    cfg: Config
    run_dir: Path
    logger: RunLogger
    dataset: TrajectoryDataset
    learner: Learner
    obs_mean: np.ndarray
    obs_std: np.ndarray
    act_low: np.ndarray
    act_high: np.ndarray
    device: str
    rng: np.random.Generator
    torch_gen: torch.Generator
    command: str = "run"
    online_steps: int = 0
    rounds: int = 0
    pretrain_done: int = 0
    phase: str = "pretrain"
    buffer: ReplayBuffer | None = None  # the online buffer, once finetuning has begun
    summary: dict = field(default_factory=dict)
    _envs: dict = field(default_factory=dict)

    # --- acting ---------------------------------------------------------------------
    def policy(self, deterministic: bool) -> Policy:
        return Policy(self.learner.model, self.obs_mean, self.obs_std, self.act_low, self.act_high,
                      self.cfg.rtg_scale, self.cfg.eval_context, deterministic=deterministic,
                      generator=self.torch_gen, noise_std=self.cfg.explore_noise)

    def envs(self, n: int) -> gym.vector.VectorEnv:
        if n not in self._envs:
            self._envs[n] = make_vector_env(self.cfg.env, n)
        return self._envs[n]

    def evaluate(self, phase: str) -> dict:
        """Mean actions, g_eval, eval_episodes episodes; the same env seeds every time so that
        evaluations along a run are comparable."""
        t = time.time()
        res = rollout(self.policy(deterministic=True), self.envs(self.cfg.eval_episodes), self.cfg.g_eval,
                      seed=1_000_000 + self.cfg.seed * 1000)
        row = {"phase": phase, "event": "eval", "updates": self.learner.updates,
               "online_steps": self.online_steps,
               **{f"eval_{k}": v for k, v in return_stats(self.cfg.env, res.returns, self.cfg.reference()).items()},
               "eval_length_mean": float(res.lengths.mean()), "eval_episodes": len(res.returns)}
        self.logger.log(row)
        norm_txt = f"  normalized {row['eval_normalized_mean']:.1f}" if "eval_normalized_mean" in row else ""
        self.logger.info(f"[{phase}] eval after {self.learner.updates} updates, {self.online_steps} online steps: "
                         f"return {row['eval_return_mean']:.1f} +- {row['eval_return_std']:.1f}{norm_txt} "
                         f"({time.time() - t:.1f} s)")
        return row

    # --- checkpoints ------------------------------------------------------------------
    def save(self, name: str) -> None:
        save_checkpoint(self.run_dir / "checkpoints" / f"{name}.pt", self.learner, obs_mean=self.obs_mean,
                        obs_std=self.obs_std, act_low=self.act_low, act_high=self.act_high,
                        extra={"online_steps": self.online_steps, "rounds": self.rounds,
                               "resume": self._resume_state()})

    def _resume_state(self) -> dict:
        """What `--resume` needs beyond the learner: counters, random generators, the summary so
        far, the length of metrics.jsonl, and the online buffer (offline trajectories by index)."""
        self.logger.metrics.flush()
        state = {"command": self.command, "phase": self.phase, "pretrain_done": self.pretrain_done,
                 "numpy_rng": json.dumps(self.rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
                 "generator_rng": self.torch_gen.get_state(), "summary": json.dumps(self.summary),
                 "metrics_bytes": self.logger.metrics.tell()}
        if self.buffer is not None:
            index = {id(e): i for i, e in enumerate(self.dataset.episodes)}
            order, online = [], []
            for e in self.buffer.episodes:
                if id(e) in index:
                    order.append(index[id(e)])
                else:
                    order.append(-1 - len(online))
                    online.append(e)
            state["buffer_order"] = torch.tensor(order, dtype=torch.long)
            if online:
                state["online"] = {k: torch.from_numpy(v) for k, v in flatten_episodes(online).items()}
        return state

    def restore(self, state: dict) -> None:
        """The counterpart of ``_resume_state``, on a Run built from the same config."""
        extra = state["extra"]
        rs = extra["resume"]
        self.online_steps, self.rounds = int(extra["online_steps"]), int(extra["rounds"])
        self.command, self.phase, self.pretrain_done = rs["command"], rs["phase"], int(rs["pretrain_done"])
        self.rng.bit_generator.state = json.loads(rs["numpy_rng"])
        torch.set_rng_state(rs["torch_rng"])
        self.torch_gen.set_state(rs["generator_rng"])
        self.summary = json.loads(rs["summary"])
        if "buffer_order" in rs:
            online = split_episodes(**{k: v.numpy() for k, v in rs["online"].items()}) if "online" in rs else []
            for e in online:
                e.online = True
            self.buffer = self._new_buffer(self.cfg.buffer_size)
            for i in rs["buffer_order"].tolist():
                self.buffer.episodes.append(self.dataset.episodes[i] if i >= 0 else online[-1 - i])

    # --- the loop ---------------------------------------------------------------------
    def _updates(self, buffer: ReplayBuffer, n: int, progress: Progress | None = None) -> dict:
        """n actor updates (and, for TD3 algorithms, policy_delay times as many critic updates) on
        batches from ``buffer``; returns each metric averaged over the updates that made it."""
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for _ in range(n * self.learner.calls_per_actor_update):
            batch = buffer.sample(self.cfg.batch_size, self.cfg.context_len, self.rng).to(self.device)
            metrics = self.learner.update(batch)
            if self.learner.events:
                self._log_events()
            for k, v in metrics.items():
                sums[k] += v
                counts[k] += 1
            if progress is not None and "loss" in metrics:
                progress.update(progress.done + 1, loss=sums["loss"] / counts["loss"])
        return {k: v / counts[k] for k, v in sums.items()}

    def _new_buffer(self, capacity: int) -> ReplayBuffer:
        return ReplayBuffer(capacity, self.obs_mean, self.obs_std, self.cfg.rtg_scale, keep_next=self.cfg.td3)

    def _log_events(self) -> None:
        """Skipped updates and rollbacks, each written to metrics.jsonl as it happens."""
        phase = self.phase
        for event in self.learner.events:
            self.logger.log({"phase": phase, "updates": self.learner.updates, "online_steps": self.online_steps,
                             **event})
            if event["event"] == "rollback" or event["in_a_row"] == 1:
                self.logger.info(f"[{phase}] warning: {event['event'].replace('_', ' ')} ({event['reason']})")
        self.learner.events.clear()

    def pretrain(self) -> dict:
        cfg = self.cfg
        buffer = self._new_buffer(len(self.dataset.episodes))
        buffer.seed(self.dataset.episodes)
        self.learner.rl_active = cfg.rl_in_pretrain  # the critic still learns from the offline data
        self.logger.info(f"[pretrain] {cfg.pretrain_updates} updates on {len(buffer)} trajectories "
                         f"({buffer.n_transitions} steps), batch {cfg.batch_size}, K {cfg.context_len}")
        progress = Progress(self.logger, "pretrain", cfg.pretrain_updates, "updates", done=self.pretrain_done)
        log_every = max(1, min(1000, cfg.pretrain_updates // 20))
        while self.pretrain_done < cfg.pretrain_updates:
            n = min(log_every, cfg.pretrain_updates - self.pretrain_done)
            m = self._updates(buffer, n, progress)
            self.pretrain_done += n
            done = self.pretrain_done
            self.logger.log({"phase": "pretrain", "updates": self.learner.updates, "online_steps": 0, **m})
            if cfg.pretrain_eval_every and done % cfg.pretrain_eval_every < n and done < cfg.pretrain_updates:
                self.evaluate("pretrain")
            self.save("latest")  # a killed pretraining resumes from here
        progress.update(self.pretrain_done, force=True)
        self.save("pretrained")
        row = self.evaluate("pretrain")
        self.summary["offline"] = _summary_of(row)
        return row

    def finetune(self) -> dict:
        cfg = self.cfg
        self.learner.rl_active = True
        if self.buffer is None:
            self.buffer = self._new_buffer(cfg.buffer_size)
            self.buffer.seed(self.dataset.episodes, cfg.buffer_size)
            self.logger.info(f"[online] buffer seeded with the top {len(self.buffer)} of {len(self.dataset.episodes)} "
                             f"offline trajectories (returns {min(e.ret for e in self.buffer.episodes):.0f} to "
                             f"{max(e.ret for e in self.buffer.episodes):.0f}); budget {cfg.online_steps} env steps")
        buffer = self.buffer
        if "offline" not in self.summary:
            self.summary["offline"] = _summary_of(self.evaluate("online"))
        if self.phase != "online":
            self.phase = "online"
            self.save("latest")  # a run killed before its first round resumes here
        progress = Progress(self.logger, "online", cfg.online_steps, "steps", done=self.online_steps)
        explore = self.envs(cfg.episodes_per_round)
        last_eval = None
        while self.online_steps < cfg.online_steps:
            self.rounds += 1
            res = rollout(self.policy(deterministic=False), explore, cfg.g_online,
                          seed=cfg.seed * 1_000_003 + self.rounds * cfg.episodes_per_round,
                          max_steps=cfg.online_steps - self.online_steps)
            for ep in res.episodes:
                buffer.add(ep)
            self.online_steps += res.steps
            m = self._updates(buffer, cfg.updates_per_round)
            row = {"phase": "online", "event": "round", "round": self.rounds, "updates": self.learner.updates,
                   "online_steps": self.online_steps, "g_online": cfg.g_online,
                   "rollout_return_mean": float(res.returns.mean()), "rollout_length_mean": float(res.lengths.mean()),
                   "buffer_trajectories": len(buffer), "buffer_steps": buffer.n_transitions, **m}
            self.logger.log(row)
            progress.update(self.online_steps, round=self.rounds, episodes=self.rounds * cfg.episodes_per_round,
                            ret=float(res.returns.mean()), **({"lambda": m["lambda"]} if "lambda" in m else {}))
            if self.rounds % cfg.eval_every == 0:
                last_eval = self.evaluate("online")
            if self.rounds % cfg.checkpoint_every == 0:
                self.save("latest")
        progress.update(self.online_steps, force=True)
        if last_eval is None or last_eval["updates"] != self.learner.updates:
            last_eval = self.evaluate("online")
        self.save("final")
        self.summary["final"] = _summary_of(last_eval)
        return last_eval

    def close(self) -> None:
        for envs in self._envs.values():
            envs.close()
        self.logger.close()


def _summary_of(row: dict) -> dict:
    return {k.replace("eval_", ""): v for k, v in row.items() if k.startswith("eval_") or k in ("updates", "online_steps")}


def setup(cfg: Config, command: str, init_from: Path | None = None, resume: dict | None = None) -> Run:
    """Validate everything that can fail before anything is written, then create the run directory
    (or, with ``resume``, a checkpoint of a killed run, reopen its directory where it stopped)."""
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = make_env_checked(cfg.env)
    horizon = env.spec.max_episode_steps if env.spec else None
    if horizon and horizon > cfg.max_ep_len:
        raise ConfigError(f"{cfg.env} episodes last up to {horizon} steps but --max-ep-len is {cfg.max_ep_len}; "
                          f"pass --max-ep-len {horizon}")
    dataset = load_dataset(cfg.dataset, download=cfg.download)
    check_matches_env(dataset, env)
    reference = reference_of(cfg.env, (cfg.ref_min_score, cfg.ref_max_score), dataset.metadata)
    if reference is not None:  # config.json records the scale every normalized score used
        cfg.ref_min_score, cfg.ref_max_score = reference
    act_low = env.action_space.low.astype(np.float32)
    act_high = env.action_space.high.astype(np.float32)
    env.close()
    init_state = resume
    if resume is None and init_from is not None:
        init_state, _ = load_from_run(init_from, "pretrained", device)
        spec = ModelSpec(**init_state["spec"])
        if (spec.obs_dim, spec.act_dim) != (dataset.obs_dim, dataset.act_dim):
            raise ConfigError(f"checkpoint in {init_from} is for observation/action dimensions "
                              f"{spec.obs_dim}/{spec.act_dim}, but {cfg.env} has {dataset.obs_dim}/{dataset.act_dim}")
        # The pretrained network fixes the architecture; the run records what it really used.
        deterministic = spec.action_head == "deterministic"
        if deterministic != (cfg.resolved_action_head() == "deterministic"):
            # The actor's kind is the checkpoint's; keep the TD3 part as asked, else as pretrained.
            td3 = cfg.td3 or "td3" in init_state["learner"]
            cfg.algo = ("vidt" if td3 else "dt") if deterministic else ("odt-td3" if td3 else "odt")
        for name in ("embed_dim", "n_layer", "n_head", "context_len", "timestep_embedding", "max_ep_len",
                     "action_head", "log_std_min", "log_std_max"):
            setattr(cfg, name, getattr(spec, name))
    if not np.allclose(act_low, -1) or not np.allclose(act_high, 1):
        for e in dataset.episodes:
            e.actions = scale_actions_to_unit(e.actions, act_low, act_high)
    if resume is None:
        run_dir = make_run_dir(cfg, command)
        cfg.save(run_dir / "config.json")
    else:
        run_dir = cfg.out
        # Rows written after the checkpoint are redone from it: drop them, so none is doubled.
        with open(run_dir / "metrics.jsonl", "r+b") as f:
            f.truncate(int(resume["extra"]["resume"]["metrics_bytes"]))
    logger = RunLogger(run_dir, cfg.to_dict(), echo=cfg.progress)
    logger.info(f"odt {command}: {shlex.join(sys.argv)}")
    logger.info(f"run directory {run_dir}; device {device}; torch threads {torch.get_num_threads()}")
    logger.info(f"dataset {dataset.name}: {len(dataset.episodes)} episodes, {dataset.n_transitions} steps, "
                f"return mean {dataset.returns().mean():.1f} max {dataset.returns().max():.1f}")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    torch_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    if init_state is not None:
        obs_mean, obs_std = init_state["obs_mean"].cpu().numpy(), init_state["obs_std"].cpu().numpy()
    else:
        obs_mean, obs_std = dataset.obs_stats()
    spec = cfg.model_spec(dataset.obs_dim, dataset.act_dim)
    model = build_model(spec.__dict__, device)
    td3 = TD3Settings(alpha=cfg.rl_alpha, normalize=cfg.rl_normalize, policy_delay=cfg.policy_delay,
                      gamma=cfg.gamma, tau=cfg.tau, target_noise=cfg.target_noise, noise_clip=cfg.noise_clip,
                      lr=cfg.critic_lr, hidden=cfg.critic_hidden, layernorm=cfg.critic_layernorm) if cfg.td3 else None
    learner = Learner(model, cfg.base_loss, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                      grad_clip=cfg.grad_clip, init_lambda=cfg.init_lambda, lambda_lr=cfg.lambda_lr,
                      target_entropy=cfg.target_entropy, entropy_samples=cfg.entropy_samples,
                      precision=cfg.precision, td3=td3, max_bad_updates=cfg.max_bad_updates)
    if resume is not None:
        learner.load_state_dict(resume["learner"])  # everything: optimizers, schedules, critics
    elif init_state is not None:
        # Model and lambda carry over; the optimizers restart so that the finetuning learning
        # rate and weight decay of this run's settings apply.
        learner.load_state_dict(init_state["learner"], model_only=True)
        learner.updates = int(init_state["learner"]["updates"])
        logger.info(f"initialised from {init_from} ({learner.updates} pretraining updates, lambda {learner.lam:.4f})")
    run = Run(cfg, run_dir, logger, dataset, learner, obs_mean, obs_std, act_low, act_high, device, rng, torch_gen,
              command=command)
    if resume is not None:
        run.restore(resume)
        logger.info(f"resumed: {run.pretrain_done} pretraining updates, round {run.rounds}, "
                    f"{run.online_steps} online steps done")
    return run


def execute(cfg: Config, command: str, pretrain: bool, finetune: bool, init_from: Path | None = None,
            resume: dict | None = None) -> dict:
    run = setup(cfg, command, init_from, resume)
    start = time.time()
    try:
        if pretrain and run.phase == "pretrain":
            run.pretrain()
        if finetune:
            run.finetune()
        run.summary.update(command=shlex.join(sys.argv), env=cfg.env, dataset=cfg.dataset, algo=cfg.algo,
                           seed=cfg.seed, updates=run.learner.updates, online_steps=run.online_steps,
                           wall_time_s=round(time.time() - start, 1), run_dir=str(run.run_dir))
        (run.run_dir / "summary.json").write_text(json.dumps(run.summary, indent=2) + "\n")
        run.logger.info(summary_table(run.summary))
    finally:
        run.close()
    return run.summary


def resume_run(run_dir: Path) -> dict:
    """``--resume RUN_DIR``: continue a killed run from its newest intact checkpoint, with its own
    config.json; what the original command was decides what remains to do."""
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json); give the --out of an odt run")
    if (run_dir / "summary.json").is_file():
        raise ConfigError(f"run {run_dir} is complete (it has summary.json); there is nothing to resume")
    cfg = Config.load(run_dir / "config.json")
    state, _ = load_from_run(run_dir, "latest", resolve_device(cfg.device))
    rs = state.get("extra", {}).get("resume")
    if rs is None:
        raise ConfigError(f"the checkpoints of {run_dir} predate --resume; start the run again")
    cfg.out, cfg.overwrite = run_dir, False
    original = rs["command"]
    return execute(cfg, original, pretrain=original in ("run", "pretrain"), finetune=original in ("run", "finetune"),
                   resume=state)


def summary_table(summary: dict) -> str:
    lines = [f"{'':<10}{'return':>20}{'normalized':>20}{'updates':>10}{'online steps':>14}"]
    for name in ("offline", "final"):
        s = summary.get(name)
        if not s:
            continue
        ret = f"{s['return_mean']:.1f} +- {s['return_std']:.1f}"
        norm = f"{s['normalized_mean']:.1f} +- {s['normalized_std']:.1f}" if "normalized_mean" in s else "-"
        lines.append(f"{name:<10}{ret:>20}{norm:>20}{s['updates']:>10}{s['online_steps']:>14}")
    if summary.get("offline") and summary.get("final") and "normalized_mean" in summary["final"]:
        delta = summary["final"]["normalized_mean"] - summary["offline"]["normalized_mean"]
        lines.append(f"{'delta':<10}{'':>20}{delta:>+20.1f}")
    lines.append(f"wall time {fmt_time(summary.get('wall_time_s', 0))}; run directory {summary.get('run_dir')}")
    return "\n".join(["", "summary", *lines])
