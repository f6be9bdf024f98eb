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
from .checkpoint import build_model, load_checkpoint, load_from_run, save_checkpoint
from .config import Config, ConfigError, check_out_dir
from .data.buffer import Batch, ReplayBuffer
from .data.sources import check_matches_env, load_dataset
from .data.trajectories import TrajectoryDataset, flatten_episodes, split_episodes
from .logging import Progress, RunLogger, fmt_return, fmt_time
from .models.transformer import ModelSpec
from .envs.multitask import Task, load_tasks, make_task_envs
from .rollout import EnsemblePolicy, Policy, make_vector_env, rollout, scale_actions_to_unit
from .schedules import ReturnTarget, decay, linear, noise_std
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
    name = "multitask" if cfg.tasks else cfg.env.replace("/", "_")
    out = cfg.out or Path("runs") / f"{name}-{cfg.algo}-s{cfg.seed}-{datetime.now():%Y%m%d-%H%M%S}"
    check_out_dir(out, cfg.overwrite, "run")
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
    # The toolbox's state: ensemble members beyond ``learner`` (each with its own batch stream),
    # the return-target history, the best evaluation so far and the rollbacks' learning-rate factor.
    members: list[Learner] = field(default_factory=list)
    member_rngs: list[np.random.Generator] = field(default_factory=list)
    target: ReturnTarget | None = None
    tasks: list[Task] = field(default_factory=list)  # multi-task runs
    safety: dict = field(default_factory=lambda: {"best_return": None, "best_updates": None, "since_best": 0,
                                                  "lr_factor": 1.0})
    _envs: dict = field(default_factory=dict)
    _offline: ReplayBuffer | None = None
    last_eval: dict | None = None  # the newest online evaluation, so that a resume does not redo it

    @property
    def learners(self) -> list[Learner]:
        return [self.learner, *self.members]

    # --- acting ---------------------------------------------------------------------
    def policy(self, deterministic: bool, noise: float = 0.0) -> Policy | EnsemblePolicy:
        cfg = self.cfg
        policies = [Policy(lr.model, self.obs_mean, self.obs_std, self.act_low, self.act_high, cfg.rtg_scale,
                           cfg.eval_context, deterministic=deterministic, generator=self.torch_gen, noise_std=noise,
                           sample=cfg.explore_action == "sample")
                    for lr in self.learners]
        if len(policies) == 1:
            return policies[0]
        return EnsemblePolicy(policies, cfg.ensemble_mode, cfg.ensemble_scale, deterministic=deterministic,
                              noise_std=noise, generator=self.torch_gen)

    def progress_fraction(self) -> float:
        return self.online_steps / self.cfg.online_steps if self.cfg.online_steps else 1.0

    def eval_target(self) -> float | np.ndarray:
        if self.tasks:
            return self._per_env("g_eval", self.cfg.eval_episodes)
        if self.cfg.eval_target == "best":  # the target's highest starts at the data's best
            return self.target.highest if self.target is not None else float(self.dataset.returns().max())
        return self.cfg.g_eval

    def envs(self, n: int) -> gym.vector.VectorEnv:
        """n environments; multi-task: n of every task."""
        if n not in self._envs:
            self._envs[n] = (make_task_envs(self.tasks, n, self.dataset.obs_dim, self.dataset.act_dim) if self.tasks
                             else make_vector_env(self.cfg.env, n))
        return self._envs[n]

    def _per_env(self, name: str, n: int) -> np.ndarray:
        """A task setting (g_eval, g_online) for each of n environments of every task."""
        return np.array([getattr(self.tasks[i % len(self.tasks)], name) for i in range(n * len(self.tasks))])

    def evaluate(self, phase: str) -> dict:
        """Mean actions, g_eval, eval_episodes episodes; the same env seeds every time so that
        evaluations along a run are comparable."""
        t = time.time()
        g_eval = self.eval_target()
        res = rollout(self.policy(deterministic=True), self.envs(self.cfg.eval_episodes), g_eval,
                      seed=1_000_000 + self.cfg.seed * 1000)
        row = {"phase": phase, "event": "eval", "updates": self.learner.updates, "online_steps": self.online_steps,
               **(self._task_stats(res) if self.tasks else
                  {"g_eval": g_eval, **{f"eval_{k}": v for k, v in
                                        return_stats(self.cfg.env, res.returns, self.cfg.reference()).items()}}),
               "eval_length_mean": float(res.lengths.mean()), "eval_episodes": len(res.returns)}
        self.logger.log(row)
        norm_txt = f"  normalized {row['eval_normalized_mean']:.1f}" if "eval_normalized_mean" in row else ""
        self.logger.info(f"[{phase}] eval after {self.learner.updates} updates, {self.online_steps} online steps: "
                         f"return {fmt_return(row['eval_return_mean'])} +- {fmt_return(row['eval_return_std'])}"
                         f"{norm_txt} "
                         f"({time.time() - t:.1f} s)")
        return row

    def _task_stats(self, res) -> dict:
        """Per task eval_<task>_*; eval_return_mean and eval_normalized_mean average the tasks'
        means (the safety nets compare the normalized one where every task has a reference)."""
        row, means, norms = {}, [], []
        task_of_episode = np.array(res.env_index) % len(self.tasks)
        for t, task in enumerate(self.tasks):
            stats = return_stats(task.env_id, res.returns[task_of_episode == t], task.reference)
            row[f"g_eval_{task.key}"] = task.g_eval
            row.update({f"eval_{task.key}_{k}": v for k, v in stats.items()})
            means.append(stats["return_mean"])
            norms.append(stats.get("normalized_mean"))
        row["eval_return_mean"], row["eval_return_std"] = float(np.mean(means)), float(np.std(means))
        if all(n is not None for n in norms):
            row["eval_normalized_mean"], row["eval_normalized_std"] = float(np.mean(norms)), float(np.std(norms))
        return row

    # --- checkpoints ------------------------------------------------------------------
    def save(self, name: str) -> None:
        save_checkpoint(self.run_dir / "checkpoints" / f"{name}.pt", self.learner, obs_mean=self.obs_mean,
                        obs_std=self.obs_std, act_low=self.act_low, act_high=self.act_high,
                        extra={"online_steps": self.online_steps, "rounds": self.rounds,
                               "resume": self._resume_state(),
                               **({"ensemble": [m.state_dict() for m in self.members]} if self.members else {})})

    def _resume_state(self) -> dict:
        """What `--resume` needs beyond the learner: counters, random generators, the summary so
        far, the length of metrics.jsonl, and the online buffer (offline trajectories by index)."""
        self.logger.metrics.flush()
        state = {"command": self.command, "phase": self.phase, "pretrain_done": self.pretrain_done,
                 "numpy_rng": json.dumps(self.rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
                 "generator_rng": self.torch_gen.get_state(), "summary": json.dumps(self.summary),
                 "metrics_bytes": self.logger.metrics.tell(), "safety": json.dumps(self.safety),
                 "last_eval": json.dumps(self.last_eval),
                 "member_rngs": json.dumps([g.bit_generator.state for g in self.member_rngs])}
        if self.target is not None:
            state["target"] = json.dumps(self.target.state())
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
                state["online_targets"] = torch.tensor([np.nan if e.target is None else e.target for e in online],
                                                       dtype=torch.float64)
                state["online_tasks"] = torch.tensor([e.task for e in online], dtype=torch.long)
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
        # Checkpoints from before the toolbox lack its entries: their defaults are what those runs used.
        self.safety = json.loads(rs.get("safety", json.dumps(self.safety)))
        self.last_eval = json.loads(rs.get("last_eval", "null"))
        for g, st in zip(self.member_rngs, json.loads(rs.get("member_rngs", "[]"))):
            g.bit_generator.state = st
        for m, st in zip(self.members, extra.get("ensemble", [])):
            m.load_state_dict(st)
        if "target" in rs:
            self.target = self._new_target()
            self.target.load(json.loads(rs["target"]))
        if "buffer_order" in rs:
            online = split_episodes(**{k: v.numpy() for k, v in rs["online"].items()}) if "online" in rs else []
            targets = rs.get("online_targets", torch.full((len(online),), float("nan"))).tolist()
            tasks = rs.get("online_tasks", torch.zeros(len(online), dtype=torch.long)).tolist()
            for e, g, t in zip(online, targets, tasks):
                e.online, e.target, e.task = True, None if np.isnan(g) else g, int(t)
            self.buffer = self._new_buffer(self.cfg.buffer_size)
            for i in rs["buffer_order"].tolist():
                self.buffer.episodes.append(self.dataset.episodes[i] if i >= 0 else online[-1 - i])

    # --- the loop ---------------------------------------------------------------------
    def _updates(self, buffer: ReplayBuffer, n: int, progress: Progress | None = None,
                 offline_ratio: float | None = None) -> dict:
        """n actor updates (and, for TD3 algorithms, policy_delay times as many critic updates) on
        batches from ``buffer`` (with ``offline_ratio``, that share of each batch from the whole
        offline dataset); returns each metric of the first learner averaged over the updates that
        made it. Ensemble members make the same updates on batches of their own."""
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for _ in range(n * self.learner.calls_per_actor_update):
            for learner, rng in zip(self.learners, [self.rng, *self.member_rngs]):
                metrics = learner.update(self._batch(buffer, rng, offline_ratio))
                if learner.events:
                    self._log_events(learner)
                if learner is not self.learner:
                    continue
                for k, v in metrics.items():
                    sums[k] += v
                    counts[k] += 1
            if progress is not None and "loss" in metrics:
                progress.update(progress.done + 1, loss=sums["loss"] / counts["loss"])
        return {k: v / counts[k] for k, v in sums.items()}

    def _batch(self, buffer: ReplayBuffer, rng: np.random.Generator, offline_ratio: float | None) -> Batch:
        B, K = self.cfg.batch_size, self.cfg.context_len
        if offline_ratio is None or not len(buffer):
            return (buffer if offline_ratio is None else self._offline).sample(B, K, rng).to(self.device)
        n_off = int(round(B * offline_ratio))
        parts = [self._offline.sample(n_off, K, rng) if n_off else None,
                 buffer.sample(B - n_off, K, rng) if n_off < B else None]
        return Batch.cat(parts).to(self.device)

    def _new_buffer(self, capacity: int) -> ReplayBuffer:
        cfg = self.cfg
        return ReplayBuffer(capacity, self.obs_mean, self.obs_std, cfg.rtg_scale, keep_next=cfg.td3,
                            priority_alpha=cfg.priority_alpha if cfg.sampling == "return" else None,
                            hindsight=cfg.hindsight)

    def _new_target(self) -> ReturnTarget:
        cfg = self.cfg
        g = cfg.g_online if cfg.target_multiple is None else cfg.target_multiple * cfg.ref_max_score
        return ReturnTarget(cfg.return_target, g, p0=cfg.target_p0, p1=cfg.target_p1, beta0=cfg.target_beta0,
                            beta1=cfg.target_beta1, window=cfg.target_window, clip=cfg.target_clip,
                            clip_c=cfg.target_clip_c)

    def _log_events(self, learner: Learner) -> None:
        """Skipped updates and rollbacks, each written to metrics.jsonl as it happens."""
        phase = self.phase
        member = {"member": self.learners.index(learner)} if self.members else {}
        for event in learner.events:
            self.logger.log({"phase": phase, "updates": learner.updates, "online_steps": self.online_steps,
                             **member, **event})
            if event["event"] == "rollback" or event["in_a_row"] == 1:
                self.logger.info(f"[{phase}] warning: {event['event'].replace('_', ' ')} ({event['reason']})")
        learner.events.clear()

    def _event(self, event: str, message: str, **fields) -> None:
        """A safety-net event, in metrics.jsonl as it happens and on the terminal."""
        row = {"phase": self.phase, "event": event, "updates": self.learner.updates,
               "online_steps": self.online_steps, **fields}
        self.logger.log(row)
        self.logger.info(f"[{row['phase']}] {message}")

    def _after_eval(self, row: dict) -> str | None:
        """Keep the best checkpoint; roll back to it on a large drop; say "stop" when patience runs out."""
        cfg, safety = self.cfg, self.safety
        ret = row["eval_normalized_mean"] if self.tasks and "eval_normalized_mean" in row else row["eval_return_mean"]
        best = safety["best_return"]
        if best is None or ret > best:
            safety.update(best_return=ret, best_updates=self.learner.updates, since_best=0)
            self.save("best")
            self._event("new_best", f"new best evaluation return {fmt_return(ret)}; saved checkpoints/best.pt",
                        eval_return=ret, previous_best=best)
            return None
        safety["since_best"] += 1
        if cfg.rollback_drop is not None and ret < best - cfg.rollback_drop * abs(best):
            state = load_checkpoint(self.run_dir / "checkpoints" / "best.pt", self.device)
            self.learner.restore_weights(state["learner"])
            for m, st in zip(self.members, state["extra"].get("ensemble", [])):
                m.restore_weights(st)
            safety["lr_factor"] *= cfg.rollback_lr_factor
            self._event("rollback_to_best",
                        f"evaluation return {fmt_return(ret)} is more than {cfg.rollback_drop:.0%} below the best "
                        f"{fmt_return(best)}: rolled back to the best weights (from {safety['best_updates']} "
                        f"updates), learning-rate factor {safety['lr_factor']:g}", eval_return=ret, best_return=best,
                        best_updates=safety["best_updates"], lr_factor=safety["lr_factor"])
            return "rolled_back"
        if cfg.early_stop_patience and safety["since_best"] >= cfg.early_stop_patience:
            self._event("early_stop", f"no new best in {safety['since_best']} evaluations: finetuning stops early",
                        evals_without_improvement=safety["since_best"], best_return=best)
            return "stop"
        return None

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
        for learner in self.learners:
            learner.rl_active = True
        mixing = cfg.offline_ratio is not None
        if mixing:  # the whole dataset, sampled beside a FIFO of online trajectories only
            self._offline = self._new_buffer(len(self.dataset.episodes))
            self._offline.seed(self.dataset.episodes)
        if self.buffer is None:
            self.buffer = self._new_buffer(cfg.buffer_size)
            if mixing:
                self.logger.info(f"[online] offline share of each batch {cfg.offline_ratio} (start:end) from all "
                                 f"{len(self.dataset.episodes)} offline trajectories, the rest from online ones")
            else:  # multi-task: every task gets its share, so that no task's return scale crowds out another
                groups = ([[e for e in self.dataset.episodes if e.task == t] for t in range(len(self.tasks))]
                          if self.tasks else [self.dataset.episodes])
                for group in groups:
                    self.buffer.seed(group, cfg.buffer_size // len(groups),
                                     rng=self.rng if cfg.buffer_seeding == "random" else None)
                seeded = np.array([e.ret for e in self.buffer.episodes])
                self._event("buffer_seeded", f"buffer seeded with the {cfg.buffer_seeding} {len(seeded)} of "
                            f"{len(self.dataset.episodes)} offline trajectories (returns {fmt_return(seeded.min())} to "
                            f"{fmt_return(seeded.max())}); budget {cfg.online_steps} env steps", phase="online",
                            seeding=cfg.buffer_seeding, trajectories=len(seeded), return_min=float(seeded.min()),
                            return_mean=float(seeded.mean()), return_max=float(seeded.max()))
        buffer = self.buffer
        if self.target is None:
            self.target = self._new_target()
            seeds = sorted(e.ret for e in (self._offline if mixing else buffer).episodes)
            self.target.observe(seeds[-cfg.target_window:])  # highest last: the "most recent"
            returns = self.dataset.returns()
            self.target.lowest, self.target.highest = float(returns.min()), float(returns.max())
        if "offline" not in self.summary:
            self.summary["offline"] = _summary_of(self.evaluate("online"))
        if self.phase != "online":
            self.phase = "online"
            for learner in self.learners:  # the pretrained weights, before any finetuning step
                learner.set_anchor(cfg.reg_weight)
            self._after_eval({f"eval_{k}": v for k, v in self.summary["offline"].items()})
            self.save("latest")  # a run killed before its first round resumes here
        progress = Progress(self.logger, "online", cfg.online_steps, "steps", done=self.online_steps)
        explore = self.envs(cfg.episodes_per_round)
        while self.online_steps < cfg.online_steps:
            self.rounds += 1
            p = self.progress_fraction()
            g_online = self._per_env("g_online", cfg.episodes_per_round) if self.tasks else self.target.value(p)
            noise = noise_std(cfg.exploration_noise(), cfg.noise_schedule, p, cfg.noise_floor)
            lr_scale = ((cfg.finetune_lr / cfg.lr if cfg.finetune_lr else 1.0) * decay(cfg.lr_decay, p)
                        * self.safety["lr_factor"])
            for learner in self.learners:
                learner.set_lr_scale(lr_scale)
            policy = self.policy(deterministic=False, noise=noise)
            res = rollout(policy, explore, g_online, seed=cfg.seed * 1_000_003 + self.rounds * cfg.episodes_per_round,
                          max_steps=cfg.online_steps - self.online_steps)
            for ep, i in zip(res.episodes, res.env_index):
                ep.task = i % max(len(self.tasks), 1)
                buffer.add(ep)
            self.target.observe(res.returns)
            self.online_steps += res.steps
            ratio = linear(*cfg.offline_ratios(), p) if mixing else None
            m = self._updates(buffer, cfg.updates_per_round, offline_ratio=ratio)
            row = {"phase": "online", "event": "round", "round": self.rounds, "updates": self.learner.updates,
                   "online_steps": self.online_steps, "noise_std": noise,
                   **({f"g_online_{t.key}": t.g_online for t in self.tasks} if self.tasks else {"g_online": g_online}),
                   **({"offline_ratio": ratio} if mixing else {}),
                   **({"ensemble_disagreement": float(np.mean(policy.disagreement))} if self.members else {}),
                   "rollout_return_mean": float(res.returns.mean()), "rollout_length_mean": float(res.lengths.mean()),
                   "buffer_trajectories": len(buffer), "buffer_steps": buffer.n_transitions, **m}
            self.logger.log(row)
            progress.update(self.online_steps, round=self.rounds, episodes=self.rounds * cfg.episodes_per_round,
                            ret=float(res.returns.mean()), **({"lambda": m["lambda"]} if "lambda" in m else {}))
            verdict = None
            if self.rounds % cfg.eval_every == 0:
                self.last_eval = self.evaluate("online")
                verdict = self._after_eval(self.last_eval)
                if verdict == "rolled_back":
                    self.last_eval = None  # the weights are the best's now: the final evaluation measures them
            if self.rounds % cfg.checkpoint_every == 0 or verdict == "stop":
                self.save("latest")
            if verdict == "stop":
                break
        progress.update(self.online_steps, force=True)
        last_eval = self.last_eval
        if last_eval is None or last_eval["updates"] != self.learner.updates:
            last_eval = self.evaluate("online")
        self.save("final")
        self.summary["final"] = _summary_of(last_eval)
        if self.safety["best_return"] is not None:
            self.summary["best"] = {"return_mean": self.safety["best_return"], "updates": self.safety["best_updates"]}
        return last_eval

    def close(self) -> None:
        for envs in self._envs.values():
            envs.close()
        self.logger.close()


def _summary_of(row: dict) -> dict:
    return {k.replace("eval_", ""): v for k, v in row.items() if k.startswith("eval_") or k in ("updates", "online_steps")}


def _checked_horizon(cfg: Config, env_id: str) -> gym.Env:
    env = make_env_checked(env_id)
    horizon = env.spec.max_episode_steps if env.spec else None
    if horizon and horizon > cfg.max_ep_len:
        env.close()
        raise ConfigError(f"{env_id} episodes last up to {horizon} steps but --max-ep-len is {cfg.max_ep_len}; "
                          f"pass --max-ep-len {horizon}")
    return env


def _check_dims(state: dict, source: Path, env_id: str, obs_dim: int, act_dim: int) -> None:
    spec = state["spec"]
    if (spec["obs_dim"], spec["act_dim"]) != (obs_dim, act_dim):
        raise ConfigError(f"checkpoint in {source} is for observation/action dimensions "
                          f"{spec['obs_dim']}/{spec['act_dim']}, but {env_id} has {obs_dim}/{act_dim}")


def setup(cfg: Config, command: str, init_from: Path | None = None, resume: dict | None = None) -> Run:
    """Validate everything that can fail before anything is written, then create the run directory
    (or, with ``resume``, a checkpoint of a killed run, reopen its directory where it stopped)."""
    cfg.validate()
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Cheap checks first: a wrong run directory or checkpoint must answer at once, not after a
    # dataset was generated (minutes on an empty cache) or downloaded.
    init_state = resume
    if resume is None and init_from is not None:
        init_state, _ = load_from_run(init_from, "pretrained", device)
    if resume is None and cfg.out is not None:
        check_out_dir(cfg.out, cfg.overwrite, "run")
    tasks: list[Task] = []
    if cfg.tasks:  # normalised and padded per task: the run itself sees a [-1, 1] box and unit statistics
        dataset, tasks = load_tasks(list(cfg.tasks), cfg, lambda env_id: _checked_horizon(cfg, env_id))
        act_low, act_high = -np.ones(dataset.act_dim, np.float32), np.ones(dataset.act_dim, np.float32)
    else:
        env = _checked_horizon(cfg, cfg.env)
        if resume is None and init_from is not None:  # before the dataset: it may take minutes
            _check_dims(init_state, init_from, cfg.env, env.observation_space.shape[0], env.action_space.shape[0])
        dataset = load_dataset(cfg.dataset, download=cfg.download)
        check_matches_env(dataset, env)
        reference = reference_of(cfg.env, (cfg.ref_min_score, cfg.ref_max_score), dataset.metadata)
        if reference is not None:  # config.json records the scale every normalized score used
            cfg.ref_min_score, cfg.ref_max_score = reference
        elif cfg.target_multiple is not None:  # found now, not after pretraining
            raise ConfigError(f"--target-multiple needs the expert return of {cfg.env}; give --ref-min-score "
                              "and --ref-max-score")
        act_low = env.action_space.low.astype(np.float32)
        act_high = env.action_space.high.astype(np.float32)
        env.close()
    if resume is None and init_from is not None:
        spec = ModelSpec(**init_state["spec"])
        _check_dims(init_state, init_from, cfg.env, dataset.obs_dim, dataset.act_dim)
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
    elif tasks:
        obs_mean, obs_std = np.zeros(dataset.obs_dim, np.float32), np.ones(dataset.obs_dim, np.float32)
    else:
        obs_mean, obs_std = dataset.obs_stats()
    spec = cfg.model_spec(dataset.obs_dim, dataset.act_dim)
    model = build_model(spec.__dict__, device)
    td3 = TD3Settings(alpha=cfg.rl_alpha, normalize=cfg.rl_normalize, policy_delay=cfg.policy_delay,
                      gamma=cfg.gamma, tau=cfg.tau, target_noise=cfg.target_noise, noise_clip=cfg.noise_clip,
                      lr=cfg.critic_lr, hidden=cfg.critic_hidden, layernorm=cfg.critic_layernorm) if cfg.td3 else None

    def make_learner(model) -> Learner:
        return Learner(model, cfg.base_loss, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                       grad_clip=cfg.grad_clip, init_lambda=cfg.init_lambda, lambda_lr=cfg.lambda_lr,
                       target_entropy=cfg.target_entropy, entropy_samples=cfg.entropy_samples,
                       precision=cfg.precision, td3=td3, max_bad_updates=cfg.max_bad_updates)

    learner = make_learner(model)
    members = []
    for i in range(1, cfg.ensemble):  # separately seeded networks; the first learner keeps the run's seed
        torch.manual_seed(cfg.seed + i)
        members.append(make_learner(build_model(spec.__dict__, device)))
    if resume is not None:
        learner.load_state_dict(resume["learner"])  # everything: optimizers, schedules, critics
    elif init_state is not None:
        # As in `odt run` (and the official code, one process for both phases): the networks,
        # LAMB's moments, the warmup's position and lambda's Adam carry over; this run's --lr and
        # --weight-decay apply from its first update. --restart-optimizers starts them afresh.
        saved = [init_state["learner"], *init_state.get("extra", {}).get("ensemble", [])]
        if members and len(saved) < cfg.ensemble:
            logger.info(f"warning: {init_from} holds {len(saved)} pretrained network(s) for an ensemble of "
                        f"{cfg.ensemble}; the others start from its first (pretrain with --ensemble {cfg.ensemble})")
        for i, member in enumerate([learner, *members]):
            member.load_state_dict(saved[i if i < len(saved) else 0], model_only=cfg.restart_optimizers)
            member.updates = int(init_state["learner"]["updates"])
            member.set_hyperparameters(cfg.lr, cfg.weight_decay, cfg.lambda_lr, cfg.critic_lr)
        logger.info(f"initialised from {init_from} ({learner.updates} pretraining updates, lambda {learner.lam:.4f}; "
                    f"optimizers {'restarted' if cfg.restart_optimizers else 'carried over'})")
    run = Run(cfg, run_dir, logger, dataset, learner, obs_mean, obs_std, act_low, act_high, device, rng, torch_gen,
              command=command, members=members, tasks=tasks,
              member_rngs=[np.random.default_rng(cfg.seed + i) for i in range(1, cfg.ensemble)])
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
        run.summary.update(command=shlex.join(sys.argv), algo=cfg.algo,
                           **({"tasks": list(cfg.tasks)} if cfg.tasks else {"env": cfg.env, "dataset": cfg.dataset}),
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
    """Offline and final evaluations with their standard errors (std / sqrt(episodes)), and the
    change with the standard error of a difference of two independent means."""
    def se(s: dict, key: str) -> float:
        return s[f"{key}_std"] / max(s.get("episodes", 1), 1) ** 0.5

    lines = [f"{'':<10}{'return':>20}{'normalized':>20}{'episodes':>10}{'updates':>10}{'online steps':>14}"]
    for name in ("offline", "final"):
        s = summary.get(name)
        if not s:
            continue
        ret = f"{fmt_return(s['return_mean'])} +- {fmt_return(se(s, 'return'))}"
        norm = f"{s['normalized_mean']:.1f} +- {se(s, 'normalized'):.1f}" if "normalized_mean" in s else "-"
        lines.append(f"{name:<10}{ret:>20}{norm:>20}{s.get('episodes', '-'):>10}{s['updates']:>10}"
                     f"{s['online_steps']:>14}")
    off, fin = summary.get("offline"), summary.get("final")
    if off and fin:
        key = "normalized" if "normalized_mean" in fin and "normalized_mean" in off else "return"
        delta = fin[f"{key}_mean"] - off[f"{key}_mean"]
        err = (se(off, key) ** 2 + se(fin, key) ** 2) ** 0.5
        if key == "normalized":
            lines.append(f"{'change':<10}{'':>20}{f'{delta:+.1f} +- {err:.1f}':>20}")
        else:
            lines.append(f"{'change':<10}{'+' * (delta >= 0) + fmt_return(delta) + ' +- ' + fmt_return(err):>20}")
    lines.append("(+- is the standard error of the mean over the evaluation episodes)")
    lines.append(f"wall time {fmt_time(summary.get('wall_time_s', 0))}; run directory {summary.get('run_dir')}")
    return "\n".join(["", "summary", *lines])
