"""The one loop. Pretraining and finetuning are the same updates on different buffers: offline,
the buffer is the whole dataset and no rollouts are made; online (Algorithm 1), each round rolls
out with g_online, adds the trajectories to the FIFO buffer, then makes I updates. Everything the
loop calls is built by ``setup`` (setup.py)."""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .algos.ensemble import Ensemble
from .algos.learner import Learner
from .checkpoint import FORMAT, generator_states, load_checkpoint, load_generator_states, plain, save_checkpoint
from .config import Config
from .data.buffer import ReplayBuffer
from .data.replay import Replay
from .envs.pool import EnvPool
from .evaluation import Evaluator, summary_of, summary_table
from .logging import Progress, RunLogger, fmt_return
from .policy import EnsemblePolicy, Policy, make_policy
from .rollout import RolloutResult, rollout
from .run import Prepared, RunState
from .safety import SafetyNets
from .schedules import ReturnTarget, decay, linear, noise_std


def _critic_view(m: dict, first: str) -> dict:
    """The progress line's metrics: ``first`` where there, then a TD3 run's Q against the Monte
    Carlo return of the same steps (a critic that sees far ahead has q near mc)."""
    view = {first: m[first]} if first in m else {}
    return {**view, "q": m["q_mean"], "mc": m["mc_return_mean"]} if "mc_return_mean" in m else view


def critic_pretrain(ensemble: Ensemble, replay: Replay, logger: RunLogger, on_events) -> int:
    """--critic-pretrain-updates: the critics alone on the whole offline dataset, every learner of
    the ensemble with its own batches, before the first online round; the updates made."""
    n = replay.cfg.critic_pretrain_updates
    if not (replay.cfg.td3 and n):
        return 0
    data, progress = replay.whole_dataset(), Progress(logger, "critic", n, "updates")
    for i in range(n):
        ensemble.critic_only_update(lambda rng: replay.batch(data, rng, None))
        if (i + 1) % 100 == 0 and i + 1 < n:  # a look at the running means, for the progress line
            progress.update(i + 1, **_critic_view(ensemble.lead.read(reset=False), "critic_loss"))
    means = ensemble.read(on_events)
    progress.update(n, force=True, **_critic_view(means, "critic_loss"))
    logger.log({"phase": "online", "event": "critic_pretrained", "updates": ensemble.lead.updates,
                "online_steps": 0, "critic_updates": ensemble.lead.critic_updates, **means})
    return n


def seeded_event(cfg: Config, buffer: ReplayBuffer, n_offline: int) -> tuple[str, str, dict]:
    """The buffer_seeded event: its name, message and fields."""
    seeded = np.array([e.ret for e in buffer.episodes])
    message = (f"buffer seeded with the {cfg.buffer_seeding} {len(seeded)} of {n_offline} offline trajectories "
               f"(returns {fmt_return(seeded.min())} to {fmt_return(seeded.max())}); budget {cfg.online_steps} env steps")
    return "buffer_seeded", message, {"phase": "online", "seeding": cfg.buffer_seeding, "trajectories": len(seeded),
                                      "return_min": float(seeded.min()), "return_mean": float(seeded.mean()),
                                      "return_max": float(seeded.max())}


@dataclass
class Exploration:
    """What a round's rollouts were made with, and what they gave."""

    policy: Policy | EnsemblePolicy
    g_online: float | np.ndarray
    noise: float
    result: RolloutResult


class Trainer:
    """The loop's components, as ``setup.build`` made them from a ``Prepared`` run, and where the
    run stands. Its ``state_dict`` is a checkpoint: every component's state dict and the counters."""

    def __init__(self, p: Prepared, ensemble: Ensemble, torch_gen: torch.Generator, envs: EnvPool):
        self.cfg = p.cfg
        self.run_dir = p.run_dir
        self.logger = p.logger
        self.dataset = p.dataset
        self.scaling = p.scaling
        self.device = p.device
        self.ensemble = ensemble
        self.torch_gen = torch_gen
        self.envs = envs
        self.evaluator = Evaluator(self.cfg, self.envs, self.logger)
        self.safety = SafetyNets(self.cfg)
        self.run = RunState(p.command)
        self.replay = Replay(self.cfg, self.dataset, self.scaling, self.device)
        self.target: ReturnTarget | None = None  # g_online and the returns it has observed

    @property
    def learner(self) -> Learner:
        return self.ensemble.lead

    @property
    def rng(self) -> np.random.Generator:
        return self.ensemble.rngs[0]

    @property
    def buffer(self) -> ReplayBuffer | None:
        return self.replay.buffer

    # --- the loop ---------------------------------------------------------------------
    def pretrain(self) -> dict:
        cfg = self.cfg
        buffer = self.replay.whole_dataset()
        self.learner.rl_active = cfg.rl_in_pretrain  # the critic still learns from the offline data
        self.logger.info(f"[pretrain] {cfg.pretrain_updates} updates on {len(buffer)} trajectories "
                         f"({buffer.n_transitions} steps), batch {cfg.batch_size}, K {cfg.context_len}")
        progress = Progress(self.logger, "pretrain", cfg.pretrain_updates, "updates", done=self.run.pretrain_done)
        log_every = max(1, min(1000, cfg.pretrain_updates // 20))
        while self.run.pretrain_done < cfg.pretrain_updates:
            n = min(log_every, cfg.pretrain_updates - self.run.pretrain_done)
            m = self._updates(buffer, n, progress)
            self.run.pretrain_done += n
            self.logger.log({"phase": "pretrain", "updates": self.learner.updates, "online_steps": 0, **m})
            done = self.run.pretrain_done
            if cfg.pretrain_eval_every and done % cfg.pretrain_eval_every < n and done < cfg.pretrain_updates:
                self.evaluate("pretrain")
            self.save("latest")  # a killed pretraining resumes from here
        progress.update(self.run.pretrain_done, force=True)
        self.save("pretrained")
        row = self.evaluate("pretrain")
        self.run.summary["offline"] = summary_of(row)
        return row

    def finetune(self) -> dict:
        cfg = self.cfg
        self._start_online()
        mixing = cfg.offline_ratio is not None
        progress = Progress(self.logger, "online", cfg.online_steps, "steps", done=self.run.online_steps)
        explore = self.envs.get(cfg.episodes_per_round)
        while self.run.online_steps < cfg.online_steps:
            self.run.rounds += 1
            p = self.run.online_steps / cfg.online_steps if cfg.online_steps else 1.0
            explored = self._act(p, explore)
            self._store(explored.result)
            ratio = linear(*cfg.offline_ratios(), p) if mixing else None
            metrics = self._updates(self.buffer, cfg.round_updates(explored.result.steps), offline_ratio=ratio)
            self._log_round(explored, ratio, metrics, progress)
            verdict = self._evaluate_round() if self.run.rounds % cfg.eval_every == 0 else None
            if self.run.rounds % cfg.checkpoint_every == 0 or verdict == "stop":
                self.save("latest")
            if verdict == "stop":
                break
        progress.update(self.run.online_steps, force=True)
        last_eval = self.run.last_eval
        if last_eval is None or last_eval["updates"] != self.learner.updates:
            last_eval = self.evaluate("online")
        self.save("final")
        self.run.summary["final"] = summary_of(last_eval)
        if self.safety.best() is not None:
            self.run.summary["best"] = self.safety.best()
        return last_eval

    def _act(self, p: float, envs) -> Exploration:
        """A round's exploration episodes at g_online, with the round's noise and learning rate."""
        cfg = self.cfg
        g_online = self.envs.per_env("g_online", cfg.episodes_per_round) if self.envs.tasks else self.target.value(p)
        noise = noise_std(cfg.exploration_noise(), cfg.noise_schedule, p, cfg.noise_floor)
        lr_scale = (cfg.finetune_lr or cfg.lr) / cfg.lr * decay(cfg.lr_decay, p) * self.safety.lr_factor
        for learner in self.ensemble:
            learner.set_lr_scale(lr_scale)
        policy = self.policy(explore_noise=noise)
        res = rollout(policy, envs, g_online, seed=cfg.seed * 1_000_003 + self.run.rounds * cfg.episodes_per_round,
                      max_steps=cfg.online_steps - self.run.online_steps)
        return Exploration(policy, g_online, noise, res)

    def _store(self, res: RolloutResult) -> None:
        for ep, i in zip(res.episodes, res.env_index):
            ep.task = i % max(len(self.envs.tasks), 1)
            self.buffer.add(ep)
        self.target.observe(res.returns)
        self.run.online_steps += res.steps

    def _log_round(self, x: Exploration, ratio: float | None, m: dict, progress: Progress) -> None:
        tasks = self.envs.tasks
        res = x.result
        buffer = self.buffer
        self.logger.log({
            "phase": "online", "event": "round", "round": self.run.rounds, "updates": self.learner.updates,
            "online_steps": self.run.online_steps, "noise_std": x.noise,
            **({f"g_online_{t.key}": t.g_online for t in tasks} if tasks else {"g_online": x.g_online}),
            **({"offline_ratio": ratio} if ratio is not None else {}),
            **({"ensemble_disagreement": float(np.mean(x.policy.disagreement))} if self.ensemble.members else {}),
            "rollout_return_mean": float(res.returns.mean()), "rollout_length_mean": float(res.lengths.mean()),
            "buffer_trajectories": len(buffer), "buffer_steps": buffer.n_transitions, **m})
        progress.update(self.run.online_steps, round=self.run.rounds, episodes=self.run.rounds * self.cfg.episodes_per_round,
                        ret=float(res.returns.mean()), **_critic_view(m, "lambda"))

    def _evaluate_round(self) -> str | None:
        """Evaluate, then let the safety nets judge: "rolled_back", "stop" or None."""
        self.run.last_eval = self.evaluate("online")
        verdict = self._after_eval(self.run.last_eval)
        if verdict == "rolled_back":
            self.run.last_eval = None  # the weights are the best's now: the final evaluation measures them
        return verdict

    def _start_online(self) -> None:
        """The online buffer (top-N offline trajectories, or, with --offline-ratio, online ones only
        beside the whole dataset), the return target, and the offline score; nothing that a resumed
        run already has."""
        cfg = self.cfg
        for learner in self.ensemble:
            learner.rl_active = True
        if self.replay.start_online(len(self.envs.tasks), self.rng):
            if self.replay.mixing:
                self.logger.info(f"[online] offline share of each batch {cfg.offline_ratio} (start:end) from all "
                                 f"{len(self.dataset.episodes)} offline trajectories, the rest from online ones")
            else:
                name, message, fields = seeded_event(cfg, self.buffer, len(self.dataset.episodes))
                self._event(name, message, **fields)
        if self.target is None:
            self.target = ReturnTarget.for_config(cfg, self.replay.seen_returns(), self.dataset.returns())
        if "offline" not in self.run.summary:
            self.run.summary["offline"] = summary_of(self.evaluate("online"))
        if self.run.phase != "online":
            self.run.phase = "online"
            for learner in self.ensemble:  # the pretrained weights, before any finetuning step
                learner.set_anchor(cfg.reg_weight)
            self.run.critic_pretrained += critic_pretrain(self.ensemble, self.replay, self.logger, self._log_events)
            self._after_eval({f"eval_{k}": v for k, v in self.run.summary["offline"].items()})
            self.save("latest")  # a run killed before its first round resumes here

    def _updates(self, buffer: ReplayBuffer, n: int, progress: Progress | None = None,
                 offline_ratio: float | None = None) -> dict:
        """n actor updates (and, for TD3 algorithms, policy_delay times as many critic updates) on
        batches from ``buffer`` (with ``offline_ratio``, that share of each batch from the whole
        offline dataset); returns each metric of the lead learner averaged over the updates that
        made it, read from the device once, at the end."""
        for _ in range(n * self.learner.calls_per_actor_update):
            self.ensemble.update(lambda rng: self.replay.batch(buffer, rng, offline_ratio))
        metrics = self.ensemble.read(self._log_events)
        if progress is not None:
            progress.update(progress.done + n, **_critic_view(metrics, "loss"))
        return metrics

    # --- acting and evaluating ----------------------------------------------------------
    def policy(self, explore_noise: float | None = None) -> Policy | EnsemblePolicy:
        """The evaluation policy (mean actions); given ``explore_noise``, the exploration policy
        (--explore-action, plus that noise)."""
        models = [learner.model for learner in self.ensemble]
        if explore_noise is None:  # the generator too: an ensemble draws its members' episodes at every reset
            return make_policy(models, self.cfg, self.scaling, generator=self.torch_gen)
        action = "sample" if self.cfg.explore_action == "sample" else "mean+noise"
        return make_policy(models, self.cfg, self.scaling, action, explore_noise, self.torch_gen, exploring=True)

    def evaluate(self, phase: str) -> dict:
        g_eval = self.evaluator.target(self.target, self.dataset)
        return self.evaluator(self.policy(), g_eval, phase, self.learner.updates, self.run.online_steps)

    def _after_eval(self, row: dict) -> str | None:
        ret = row.get("eval_normalized_mean", row["eval_return_mean"]) if self.envs.tasks else row["eval_return_mean"]
        return self.safety.after_eval(ret, self.learner.updates, lambda: self.save("best"), self._restore_best,
                                      self._event)

    def _restore_best(self) -> None:
        self.ensemble.restore_weights(load_checkpoint(self.run_dir / "checkpoints" / "best.pt")["ensemble"])

    # --- logging ----------------------------------------------------------------------
    def _log_events(self, learner: Learner) -> None:
        """Skipped updates (counted over the interval just read) and rollbacks, in metrics.jsonl and
        as a warning on the terminal."""
        member = {"member": self.ensemble.learners.index(learner)} if self.ensemble.members else {}
        for event in learner.guard.events:
            self.logger.log({"phase": self.run.phase, "updates": learner.updates, "online_steps": self.run.online_steps,
                             **member, **event})
            n = event.get("count", 0)
            what = f"{n} skipped update{'s' * (n != 1)}" if event["event"] == "skipped_update" else "rollback"
            self.logger.info(f"[{self.run.phase}] warning: {what} ({event['reason']})")
        learner.guard.events.clear()

    def _event(self, event: str, message: str, **fields) -> None:
        """A safety-net event, in metrics.jsonl as it happens and on the terminal."""
        row = {"phase": self.run.phase, "event": event, "updates": self.learner.updates,
               "online_steps": self.run.online_steps, **fields}
        self.logger.log(row)
        self.logger.info(f"[{row['phase']}] {message}")

    # --- checkpoints: every component's state, and where the run stands ---------------
    def save(self, name: str) -> None:
        save_checkpoint(self.run_dir / "checkpoints" / f"{name}.pt", self.state_dict())

    def state_dict(self) -> dict:
        self.logger.metrics.flush()
        run = {**self.run.state_dict(), "metrics_bytes": self.logger.metrics.tell()}
        state = {"format": FORMAT, "spec": dataclasses.asdict(self.learner.model.spec),
                 "scaling": self.scaling.state_dict(), "ensemble": self.ensemble.state_dict(),
                 "safety": plain(self.safety.state_dict()), "generators": generator_states(self.torch_gen), "run": run}
        if self.target is not None:
            state["target"] = self.target.state_dict()
        buffer = self.replay.state_dict()
        if buffer is not None:
            state["buffer"] = buffer
        return state

    def load_state_dict(self, state: dict) -> None:
        """A resumed run's state, into the components its own config built."""
        self.run.load_state_dict(state["run"])
        self.ensemble.load_state_dict(state["ensemble"])
        if not load_generator_states(state["generators"], self.torch_gen):
            seed = self.cfg.seed * 1_000_003 + self.run.pretrain_done + self.run.online_steps + 1
            self.torch_gen.manual_seed(seed)
            torch.manual_seed(seed)  # dropout's: a GPU's own generator, and the CPU's
            self.logger.info(f"the checkpoint was written on another kind of device than {self.device}: the random "
                             f"streams of sampled actions and dropout restart here (seed {seed}), the batches' go on")
        self.safety.load_state_dict(state["safety"])
        if "target" in state:
            self.target = ReturnTarget.for_config(self.cfg)
            self.target.load_state_dict(state["target"])
        if "buffer" in state:
            self.replay.load_state_dict(state["buffer"])

    def close(self) -> None:
        self.envs.close()
        self.logger.close()


def write_summary(summary: dict, cfg: Config, run_dir: Path, logger: RunLogger, updates: int, online_steps: int,
                  start: float) -> None:
    """summary.json (the offline, final and best evaluations and what made them), shown and tracked."""
    summary.update(command=shlex.join(sys.argv), algo=cfg.algo,
                   **({"tasks": list(cfg.tasks)} if cfg.tasks else {"env": cfg.env, "dataset": cfg.dataset}),
                   seed=cfg.seed, updates=updates, online_steps=online_steps,
                   wall_time_s=round(time.time() - start, 1), run_dir=str(run_dir))
    # Whole or not at all: a torn summary.json would pass for a complete run.
    tmp = run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, run_dir / "summary.json")
    logger.info(summary_table(summary))
    logger.summary(summary)


def execute(trainer: Trainer, pretrain: bool, finetune: bool) -> dict:
    """Run the phases asked for (a resumed run skips what it has done), then write summary.json."""
    cfg, start = trainer.cfg, time.time()
    try:
        # --dataset none: random episodes seed the buffer; there is nothing to pretrain on.
        if pretrain and trainer.run.phase == "pretrain" and cfg.dataset != "none":
            trainer.pretrain()
        if finetune:
            trainer.finetune()
        # What this machine resolved (config.json keeps what was asked: auto resolves afresh on resume).
        trainer.run.summary.update(device=str(trainer.device), precision=trainer.learner.precision)
        write_summary(trainer.run.summary, cfg, trainer.run_dir, trainer.logger, trainer.learner.updates,
                      trainer.run.online_steps, start)
    finally:
        trainer.close()
    return trainer.run.summary
