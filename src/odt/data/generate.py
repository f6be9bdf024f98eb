"""Make offline datasets: train a behaviour policy with SAC (discrete actions: PPO), record its
trajectories, and write them as a Minari dataset (``odt data generate``).

D4RL's recipe: ``medium`` is a policy trained until it scores about a third of the expert
reference return, recorded with its sampled actions; ``medium-replay`` is everything that policy's
replay buffer saw on the way there; ``expert`` is a policy trained to the expert return; ``random``
takes uniform actions. stable-baselines3 is an optional extra: it is only needed to train a
behaviour policy, never to replay a shipped one (the embedded datasets).
"""
from __future__ import annotations

import collections
import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..config import ConfigError
from ..envs.make import check_spaces, episode_returns, make_env, make_env_checked, maze_of
from ..logging import Progress, fmt_time
from ..scores import REFERENCE_RETURNS, task_of
from .formats import from_arrays, rows_at_ends
from .minari import write_minari
from .waypoints import collect_waypoints, waypoint_reference
from .trajectories import Episode, TrajectoryDataset, observation_rows

def _log(line: str) -> None:
    print(line, flush=True)  # progress must show up at once in a log file too


# D4RL's medium policies score about a third of the expert reference return.
QUALITY_FRACTION = {"random": 0.0, "medium": 1.0 / 3.0, "medium-replay": 1.0 / 3.0, "expert": 1.0}


@dataclass
class BehaviourPolicy:
    """An MLP actor as plain tensors, replayable without SB3: SB3 SAC's squashed Gaussian
    (continuous actions) or SB3 PPO's categorical (discrete actions, keys ``action_net.*``)."""

    weights: dict[str, torch.Tensor]
    meta: dict

    def act(self, obs: np.ndarray, rng: np.random.Generator, deterministic: bool = False) -> np.ndarray:
        # float64 numpy, not torch: torch's float32 GEMM rounds differently with the thread count
        # (and the CPU), and Hopper's chaos turns one flipped bit into another dataset. Here the
        # float32 action only changes if a float64 rounding difference crosses a float32 boundary.
        w = self._w64()
        if "action_net.weight" in w:
            return self._act_categorical(w, obs, rng, deterministic)
        h = np.asarray(obs, dtype=np.float64)
        n_hidden = sum(1 for k in w if k.startswith("latent_pi.") and k.endswith(".weight"))
        for i in range(n_hidden):
            h = np.maximum(h @ w[f"latent_pi.{2 * i}.weight"].T + w[f"latent_pi.{2 * i}.bias"], 0.0)
        mu = h @ w["mu.weight"].T + w["mu.bias"]
        std = np.exp(np.clip(h @ w["log_std.weight"].T + w["log_std.bias"], -20, 2))
        pre = mu if deterministic else mu + std * rng.standard_normal(mu.shape)
        return np.tanh(pre).astype(np.float32)

    @staticmethod
    def _act_categorical(w: dict, obs: np.ndarray, rng: np.random.Generator, deterministic: bool) -> np.ndarray:
        """PPO's policy network (tanh layers, then the action logits): the most probable action,
        or one drawn from the softmax by the inverse CDF at a uniform from ``rng``."""
        h = np.asarray(obs, dtype=np.float64)
        n_hidden = sum(1 for k in w if k.startswith("mlp_extractor.policy_net.") and k.endswith(".weight"))
        for i in range(n_hidden):
            h = np.tanh(h @ w[f"mlp_extractor.policy_net.{2 * i}.weight"].T + w[f"mlp_extractor.policy_net.{2 * i}.bias"])
        logits = h @ w["action_net.weight"].T + w["action_net.bias"]
        if deterministic:
            return logits.argmax(-1)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        cdf = np.cumsum(p / p.sum(-1, keepdims=True), -1)
        u = rng.random((*logits.shape[:-1], 1))
        return np.minimum((cdf < u).sum(-1), logits.shape[-1] - 1)

    def _w64(self) -> dict[str, np.ndarray]:
        if getattr(self, "_cache", None) is None:
            self._cache = {k: v.double().numpy() for k, v in self.weights.items()}
        return self._cache

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.weights.items()}, str(path),
                  metadata={"odt_behaviour": json.dumps(self.meta)})

    @classmethod
    def load(cls, path: str | Path) -> "BehaviourPolicy":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                weights = {k: f.get_tensor(k) for k in f.keys()}
                meta = json.loads((f.metadata() or {}).get("odt_behaviour", "{}"))
        except Exception as e:  # safetensors raises its own error types for missing and corrupt files
            raise ConfigError(f"cannot read behaviour policy {path}: {e}; give a policy.safetensors written by "
                              "`odt data generate`") from e
        return cls(weights, meta)


def _actor_weights(model) -> dict[str, torch.Tensor]:
    """The acting part of an SB3 model: SAC's actor, or PPO's policy network and action layer."""
    if hasattr(model, "actor"):
        return {k: v.detach().cpu().clone() for k, v in model.actor.state_dict().items()
                if k.startswith(("latent_pi.", "mu.", "log_std."))}
    return {k: v.detach().cpu().clone() for k, v in model.policy.state_dict().items()
            if k.startswith(("mlp_extractor.policy_net.", "action_net."))}


def evaluate_policy(policy: BehaviourPolicy, env_id: str, episodes: int, seed: int) -> tuple[float, float]:
    """Mean and std return of the policy's sampled actions (the actions it records)."""
    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    with threadpool_limits(1, user_api="blas"):  # see collect
        returns = episode_returns(env, lambda obs: policy.act(obs, rng), episodes, seed)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("stable_baselines3", "gymnasium", "mujoco", "torch", "minari", "numpy"):
        try:
            out[name] = md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:
            pass
    return out


def train_behaviour(env_id: str, target_return: float, out_dir: str | Path, seed: int = 0,
                    max_steps: int = 1_000_000, eval_every: int = 5000, eval_episodes: int = 5,
                    log=_log) -> tuple[BehaviourPolicy, Path]:
    """Train SAC (discrete actions: PPO) until the sampled-action evaluation return reaches
    ``target_return``.

    Saves the actor (``policy.safetensors``) and, for SAC, the replay buffer so far (``replay.npz``,
    the 'medium-replay' data) into ``out_dir``; returns the policy and the replay buffer's path
    (None for PPO, which keeps none).
    """
    try:
        from stable_baselines3 import PPO, SAC
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.logger import Logger
    except ImportError as e:  # pragma: no cover - depends on the optional extra
        raise ConfigError("training a behaviour policy needs stable-baselines3; install it with "
                          "`pip install 'odt[generate]'`") from e
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(env_id)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    model = (PPO if discrete else SAC)("MlpPolicy", env, seed=seed, verbose=0, device="cpu")
    name = "ppo" if discrete else "sac"
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default leaves <tempdir>/SB3-<date>
    start = time.time()
    result: dict = {}

    class Stop(BaseCallback):
        def _on_step(self) -> bool:
            n = self.num_timesteps
            if n % eval_every:
                return True
            pol = BehaviourPolicy(_actor_weights(self.model), {})
            mean, std = evaluate_policy(pol, env_id, eval_episodes, seed=10_000 + n)
            elapsed = time.time() - start
            log(f"[{name}] {n}/{max_steps} steps  eval return {mean:.1f} +- {std:.1f}  target {target_return:g}  "
                f"{n / elapsed:.0f} steps/s  elapsed {fmt_time(elapsed)}  "
                f"left at most {fmt_time((max_steps - n) * elapsed / n)}")
            if mean >= target_return:
                result.update(steps=n, ret=mean, std=std)
                return False
            return True

    model.learn(total_timesteps=max_steps, callback=Stop())
    if not result:
        log(f"[{name}] warning: the target return {target_return:g} was not reached in {max_steps} steps; "
            "keeping the last policy (raise --max-train-steps to train longer)")
    steps = result.get("steps", model.num_timesteps)
    meta = {"env_id": env_id, "algorithm": name.upper(), "target_return": target_return, "train_steps": int(steps),
            "eval_return_mean": result.get("ret"), "eval_return_std": result.get("std"),
            "reached_target": bool(result), "seed": seed, "train_seconds": round(time.time() - start, 1),
            "versions": versions()}
    policy = BehaviourPolicy(_actor_weights(model), meta)
    policy.save(out / "policy.safetensors")
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return policy, None if discrete else _save_replay(model.replay_buffer, out / "replay.npz")


def _save_replay(rb, path: Path) -> Path:
    """SAC's replay buffer so far: the medium-replay data."""
    n = rb.size()
    np.savez_compressed(path, observations=rb.observations[:n, 0], actions=rb.actions[:n, 0],
                        rewards=rb.rewards[:n, 0], next_observations=rb.next_observations[:n, 0],
                        dones=rb.dones[:n, 0], timeouts=rb.timeouts[:n, 0])
    return path


def _vector_env(env_id: str, n_envs: int, horizon: int | None) -> gym.vector.SyncVectorEnv:
    def one():
        env = make_env(env_id, disable_env_checker=True)  # the checker costs a wrapper call per step
        limited = horizon is None or (env.spec and env.spec.max_episode_steps)
        return env if limited else gym.wrappers.TimeLimit(env, horizon)

    return gym.vector.SyncVectorEnv([one for _ in range(n_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


class _Episodes:
    """The steps of environments stepped together, cut into episodes as each one ends."""

    def __init__(self, n_envs: int):
        self.steps: list[tuple[list, list, list]] = [([], [], []) for _ in range(n_envs)]
        self.done: list[Episode] = []
        self.recent = collections.deque(maxlen=100)  # the last returns, kept: summing 100 episodes a step cost 23%

    def add(self, i: int, obs: np.ndarray, act: np.ndarray, rew: float) -> None:
        for seq, x in zip(self.steps[i], (obs, act, rew)):
            seq.append(x)

    def end(self, i: int, final: np.ndarray, terminated: bool, counted: bool = True) -> None:
        """Environment i's episode so far, if it has steps, ended (else truncated) before ``final``."""
        o, a, r = self.steps[i]
        if not o:
            return
        actions = np.array(a, np.float32).reshape(len(a), -1)  # a discrete index: one column
        self.done.append(Episode(observation_rows(o), actions, np.array(r, np.float32), terminated=terminated,
                                 truncated=not terminated, final_observation=observation_rows([final])[0]))
        if counted:
            self.recent.append(self.done[-1].ret)
        self.steps[i] = ([], [], [])


def collect(env_id: str, transitions: int, seed: int, policy: BehaviourPolicy | None, name: str = "",
            n_envs: int = 10, log=_log, episodes_wanted: int | None = None,
            horizon: int | None = None) -> TrajectoryDataset:
    """Record exactly ``transitions`` steps of a behaviour policy (sampled actions) or of uniform
    random actions, over ``n_envs`` environments stepped together. Episodes are cut at the
    environment's own termination and time limit; the last ones at the budget (truncated). With
    ``episodes_wanted``, the first that many whole episodes instead (``transitions`` a cap).
    ``horizon`` cuts episodes of environments without a time limit of their own.

    The policy acts on all environments at once, with numpy's BLAS on one thread: its matrices are
    far too small to gain from a second, whose worker spins between the products and, when the
    other core is busy, makes every product wait for its time slice (odt/hopper-medium took 186 s
    instead of 29 s on two busy cores). The data is the same on any thread count, bit for bit.
    ``n_envs`` is part of the data: the policy's noise is drawn per batch."""
    rng = np.random.default_rng(seed)
    envs = _vector_env(env_id, n_envs, horizon)
    envs.action_space.seed(seed)
    obs, _ = envs.reset(seed=seed)
    space = envs.single_action_space
    eps = _Episodes(n_envs)
    total = 0
    progress = Progress(SimpleNamespace(info=log), "collect", transitions, "steps", every=10.0)
    with threadpool_limits(1, user_api="blas"):
        while total < transitions and (episodes_wanted is None or len(eps.done) < episodes_wanted):
            if policy is None and isinstance(space, gym.spaces.Discrete):
                act = rng.integers(0, space.n, size=n_envs)
            elif policy is None:
                act = rng.uniform(space.low, space.high, size=(n_envs, len(space.low))).astype(np.float32)
            else:
                act = policy.act(obs, rng)
            nxt, rew, term, trunc, info = envs.step(act)
            for i in range(n_envs):
                eps.add(i, obs[i], act[i], rew[i])
                total += 1
                if term[i] or trunc[i] or total >= transitions:
                    eps.end(i, info["final_obs"][i] if (term[i] or trunc[i]) else nxt[i], bool(term[i]))
                if total >= transitions and episodes_wanted is None:
                    # The budget is spent mid-step: keep every partial episode, cut (truncated). The
                    # environments before i have taken this step, the others not yet.
                    for j in range(n_envs):
                        eps.end(j, nxt[j] if j < i else obs[j], False, counted=False)
                    break
            obs = nxt
            progress.update(total, force=total >= transitions, episodes=len(eps.done),
                            **({"return_mean": float(np.mean(eps.recent))} if eps.recent else {}))
    episodes = eps.done
    envs.close()
    if episodes_wanted is not None:
        episodes = episodes[:episodes_wanted]
    meta = {"env_id": env_id, "generator": "odt.data.generate.collect", "seed": seed,
            "behaviour": policy.meta if policy is not None else "uniform random"}
    return TrajectoryDataset(episodes, env_id=env_id, name=name, metadata=meta)


def replay_dataset(path: Path, env_id: str, limit: int | None = None) -> TrajectoryDataset:
    """SB3's replay buffer (``replay.npz`` from ``train_behaviour``) as episodes, in the order
    they were collected; ``limit`` keeps the first transitions only."""
    r = np.load(path)
    n = len(r["rewards"]) if limit is None else min(limit, len(r["rewards"]))
    done, timeout = r["dones"][:n].astype(bool), r["timeouts"][:n].astype(bool)
    a = dict(observations=r["observations"][:n].astype(np.float32), actions=r["actions"][:n].astype(np.float32),
             rewards=r["rewards"][:n].astype(np.float32), terminals=done & ~timeout, timeouts=done & timeout)
    a["final_observations"] = rows_at_ends(a, r["next_observations"][:n].astype(np.float32), str(path))
    a["metadata"] = {"env_id": env_id}
    return from_arrays(a, str(path))


@dataclass
class GenerateArgs:
    env: str
    """Gymnasium environment id, e.g. Hopper-v5."""
    quality: Literal["random", "medium", "medium-replay", "expert", "waypoints"]
    """D4RL's dataset kinds: uniform actions, a policy at 1/3 or all of the expert return, or the
    replay buffer of the medium policy's training; waypoints (PointMaze only): Minari's recipe, a
    noisy waypoint controller (--policy and --target-return do not apply)."""
    out: str
    """Minari dataset id to create in the local store ($MINARI_DATASETS_PATH), e.g. hopper/medium-v0."""
    transitions: int = 1_000_000
    """Transitions to record (medium-replay: at most this many, the buffer's first ones)."""
    seed: int = 0
    """Seed of the SAC training and of the recording."""
    target_return: Optional[float] = None
    """Stop training once the evaluation return reaches this; default the quality's fraction of
    D4RL's expert reference return."""
    max_train_steps: int = 1_000_000
    """Upper bound on SAC training steps."""
    eval_every: int = 5000
    """Evaluate the SAC policy every this many steps."""
    eval_episodes: int = 5
    """Episodes per evaluation of the SAC policy."""
    policy: Optional[Path] = None
    """Record with this behaviour policy (a policy.safetensors from an earlier run) instead of training one."""
    work_dir: Optional[Path] = None
    """Where the behaviour policy and the SAC replay buffer are kept; default runs/generate/<out>."""


def generate_command(a: GenerateArgs, log=_log) -> dict:
    """``odt data generate``: validate everything first, then train, record and write."""
    target, work = _check_generate(a)
    if a.quality == "waypoints":
        return _generate_waypoints(a, log)
    t0 = time.time()
    policy, replay = None, None
    if a.policy is not None:
        policy = BehaviourPolicy.load(a.policy)
    elif a.quality != "random":
        log(f"[generate] training a behaviour policy (SAC; PPO for discrete actions) on {a.env} until its evaluation "
            f"return reaches {target:.1f} "
            f"(at most {a.max_train_steps} steps); policy and replay buffer go to {work}")
        policy, replay = train_behaviour(a.env, target, work, seed=a.seed, max_steps=a.max_train_steps,
                                         eval_every=a.eval_every, eval_episodes=a.eval_episodes, log=log)
    if a.quality == "medium-replay":
        ds = replay_dataset(replay, a.env, limit=a.transitions)
        if ds.n_transitions < a.transitions:
            log(f"[generate] the replay buffer holds {ds.n_transitions} transitions, fewer than --transitions "
                f"{a.transitions}: all of them are kept")
    else:
        log(f"[generate] recording {a.transitions} transitions of "
            f"{'uniform random actions' if policy is None else 'the behaviour policy (sampled actions)'}")
        ds = collect(a.env, a.transitions, a.seed, policy, name=a.out, log=log)
    return _write_generated(a, ds, policy, target, work, t0, log)


def _check_generate(a: GenerateArgs) -> tuple[float | None, Path]:
    """Every check of `odt data generate`, before any training or recording; the training target
    and the work directory."""
    import minari
    from minari.dataset.minari_dataset import parse_dataset_id

    with contextlib.closing(make_env_checked(a.env)) as env:
        check_spaces(env, a.env)
        discrete = isinstance(env.action_space, gym.spaces.Discrete)
    if discrete and a.quality == "medium-replay":
        raise ConfigError(f"--quality medium-replay records SAC's replay buffer, and {a.env}'s discrete actions train "
                          "PPO, which keeps none; choose random, medium or expert")
    if a.transitions <= 0:
        raise ConfigError(f"--transitions must be positive, got {a.transitions}")
    if a.target_return is not None and not math.isfinite(a.target_return):
        raise ConfigError(f"--target-return must be a finite number, got {a.target_return}")
    try:
        parse_dataset_id(a.out)
    except ValueError as e:
        raise ConfigError(f"--out {a.out!r} is not a Minari dataset id; use the form namespace/name-v0, "
                          "e.g. hopper/medium-v0") from e
    if a.quality == "waypoints" and (maze_of(a.env) or ("",))[0] != "pointmaze":
        raise ConfigError(f"--quality waypoints is the PointMaze recipe; {a.env} is not a PointMaze environment "
                          "(e.g. PointMaze_UMaze-v3)")
    if a.out in minari.list_local_datasets():
        raise ConfigError(f"Minari dataset {a.out} already exists in the local store; choose another --out "
                          f"or delete it first with `minari delete {a.out}`")
    target = a.target_return
    if target is None and a.quality not in ("random", "waypoints") and a.policy is None:
        task = task_of(a.env)
        if task is None:
            raise ConfigError(f"no expert reference return for {a.env}; give the training target with --target-return")
        target = QUALITY_FRACTION[a.quality] * REFERENCE_RETURNS[task][1]
    if a.quality == "medium-replay" and a.policy is not None:
        raise ConfigError("--quality medium-replay records SAC's training replay buffer; drop --policy")
    work = a.work_dir or Path("runs") / "generate" / a.out.replace("/", "__")
    if a.quality not in ("random", "waypoints") and a.policy is None and (work / "policy.safetensors").exists():
        raise ConfigError(f"{work} already holds a behaviour policy; pass --policy {work / 'policy.safetensors'} "
                          "to record with it, or choose another --work-dir")
    return target, work


def _write_generated(a: GenerateArgs, ds: TrajectoryDataset, policy: BehaviourPolicy | None, target: float | None,
                     work: Path, t0: float, log) -> dict:
    """The recorded data into the Minari store, with its behaviour policy and how it was made."""
    behaviour = policy.meta if policy is not None else {}
    extra = {"quality": a.quality, "env_id": a.env, "transitions": ds.n_transitions, "seed": a.seed,
             "target_return": target, "behaviour": behaviour or None, "versions": versions(),
             "generate_seconds": round(time.time() - t0, 1)}
    algorithm = ("uniform random" if policy is None else
                 f"SB3 {behaviour.get('algorithm', 'SAC')} ({behaviour.get('train_steps', '?')} steps)")
    ret = behaviour.get("eval_return_mean")
    description = (f"D4RL-style '{a.quality}' data for {a.env} made by `odt data generate`: {ds.n_transitions} "
                   f"transitions; behaviour: {algorithm}"
                   + (f", evaluation return {ret:.1f}" if ret is not None else "") + ".")
    log(f"[generate] writing {len(ds.episodes)} episodes into the Minari store (about 1 ms per episode)")
    dataset = write_minari(ds, a.out, a.env, algorithm, description, extra)
    if policy is not None:  # the dataset carries the policy that made it
        src = a.policy or work / "policy.safetensors"
        shutil.copy(src, dataset.storage.data_path.parent / "behaviour_policy.safetensors")
    d = ds.describe()
    log(f"[generate] wrote Minari dataset {a.out} ({d['n_episodes']} episodes, {d['n_transitions']} transitions, "
        f"return mean {d['return_mean']:.1f}) to {dataset.storage.data_path.parent} in {fmt_time(time.time() - t0)}")
    return extra


def _generate_waypoints(a: GenerateArgs, log) -> dict:
    """PointMaze by Minari's recipe (waypoints.py), with the references measured the same way."""
    t0 = time.time()
    log(f"[generate] recording {a.transitions} transitions of the noisy waypoint controller in {a.env}")
    ds = collect_waypoints(a.env, a.transitions, a.seed, name=a.out, log=log)
    reference = waypoint_reference(a.env, seed=a.seed)
    log(f"[generate] reference returns over 100 evaluation episodes: random {reference[0]:.1f}, "
        f"controller {reference[1]:.1f}")
    extra = {"quality": "waypoints", "env_id": a.env, "transitions": ds.n_transitions, "seed": a.seed,
             "behaviour": ds.metadata["behaviour"], "versions": versions(),
             "generate_seconds": round(time.time() - t0, 1)}
    description = (f"PointMaze data for {a.env} made by `odt data generate --quality waypoints` (Minari's recipe): "
                   f"{ds.n_transitions} transitions, observation then desired goal.")
    dataset = write_minari(ds, a.out, a.env, "waypoint controller", description, extra, reference=reference)
    log(f"[generate] wrote Minari dataset {a.out} ({len(ds.episodes)} episodes) to "
        f"{dataset.storage.data_path.parent} in {fmt_time(time.time() - t0)}")
    return extra
