"""The baselines of the ODT paper's Table 5.1 as ordinary odt runs (`odt baseline sac|iql`, which is
`odt run --algo sac|iql`, so that `odt sweep --set algo=odt,sac,iql` runs them): SAC online from
scratch (stable-baselines3) and IQL offline, then online (torchrl's ``IQLLoss``).

They share with the transformer runs the environment, the dataset (IQL's offline data; for SAC
only its reference returns), the online budget in environment steps, the evaluation (``Evaluator``:
the same episodes, seeds and metrics.jsonl keys), the run directory and summary.json, so that
`odt report` puts them in the same tables and curves. The algorithms are the libraries'; this
module only feeds them and evaluates them.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .config import Config, ConfigError
from .envs.make import make_env_with_horizon, scale_actions_to_unit
from .envs.pool import EnvPool
from .evaluation import Evaluator, summary_of
from .logging import Progress
from .run import Prepared
from .scaling import Scaling
from .train import write_summary

NEEDS = {"sac": "stable_baselines3", "iql": "torchrl"}


def check_baseline(cfg: Config, command: str) -> None:
    """Before any data is loaded: the command, and the library the baseline runs on."""
    if command != "run":
        raise ConfigError(f"--algo {cfg.algo} is a baseline: run it whole with `odt baseline {cfg.algo}` "
                          f"(or `odt run --algo {cfg.algo}`), not `odt {command}`")
    try:
        __import__(NEEDS[cfg.algo])
    except ImportError:
        raise ConfigError(f"--algo {cfg.algo} needs {NEEDS[cfg.algo]}: pip install 'odt[baselines]'") from None


class _Actor:
    """What ``rollout`` needs of a policy, for a function from observations to actions in the
    [-1, 1] box: no context, no target return."""

    def __init__(self, fn, scaling: Scaling):
        self.fn, self.scaling = fn, scaling
        self.model = SimpleNamespace(spec=SimpleNamespace(act_dim=len(scaling.act_low)))

    def reset(self, target_return, n: int = 1) -> None:
        pass

    def act(self, obs, reward=None, rows=None) -> np.ndarray:
        return self.scaling.from_unit(self.fn(np.asarray(obs, np.float32)))

    def advance(self) -> None:
        pass


class BaselineRun:
    """The parts every baseline shares: evaluations at evenly spaced online steps, progress, the
    summary."""

    def __init__(self, p: Prepared):
        cfg, self.cfg, self.run_dir, self.logger, self.scaling = p.cfg, p.cfg, p.run_dir, p.logger, p.scaling
        self.envs = EnvPool(cfg.env, [], 0, len(p.scaling.act_low))
        self.evaluator = Evaluator(cfg, self.envs, self.logger)
        self.points = list(np.linspace(0, cfg.online_steps, cfg.baseline_evals + 1)[1:].round().astype(int))
        self.summary: dict = {}
        self.best: dict | None = None
        self.progress = Progress(self.logger, "online", cfg.online_steps, "steps")

    def evaluate(self, fn, phase: str, updates: int, online_steps: int) -> dict:
        row = self.evaluator(_Actor(fn, self.scaling), self.cfg.g_eval, phase, updates, online_steps)
        if phase == "online" and (self.best is None or row["eval_return_mean"] > self.best["return_mean"]):
            self.best = {"return_mean": row["eval_return_mean"], "updates": updates}
        return row

    def due(self, online_steps: int) -> bool:
        if self.points and online_steps >= self.points[0]:
            while self.points and online_steps >= self.points[0]:
                self.points.pop(0)
            return True
        return False

    def finish(self, offline: dict, final: dict, updates: int, online_steps: int, start: float) -> dict:
        self.progress.update(online_steps, force=True)
        self.summary["offline"], self.summary["final"] = summary_of(offline), summary_of(final)
        if self.best is not None:
            self.summary["best"] = self.best
        write_summary(self.summary, self.cfg, self.run_dir, self.logger, updates, online_steps, start)
        return self.summary


def train_sac(run: BaselineRun, device: str) -> dict:
    """SAC online from scratch: stable-baselines3's, with its own replay buffer and a callback that
    evaluates at the run's points."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    cfg, start = run.cfg, time.time()
    env = make_env_with_horizon(cfg.env, cfg.max_ep_len)
    h = cfg.baseline_hidden
    model = SAC("MlpPolicy", env, learning_rate=cfg.baseline_lr, buffer_size=max(cfg.online_steps, 1),
                learning_starts=cfg.sac_learning_starts, batch_size=cfg.baseline_batch_size, tau=cfg.tau,
                gamma=cfg.gamma, policy_kwargs={"net_arch": [h, h]}, seed=cfg.seed, device=device, verbose=0)
    # The run logs through run.logger. SB3's own default logger, even one that writes nothing,
    # makes a folder <tempdir>/SB3-<date> at every learn() and leaves it there: give it one with
    # no folder and no outputs.
    model.set_logger(Logger(folder=None, output_formats=[]))
    low, high = env.action_space.low, env.action_space.high

    def mean_action(obs: np.ndarray) -> np.ndarray:  # SB3's deterministic action, back in the [-1, 1] box
        return scale_actions_to_unit(model.predict(obs, deterministic=True)[0], low, high)

    offline = run.evaluate(mean_action, "pretrain", 0, 0)
    last = {"row": offline}

    def evaluate(steps: int) -> None:
        returns = [e["r"] for e in model.ep_info_buffer]
        run.logger.log({"phase": "online", "event": "train", "updates": model._n_updates, "online_steps": steps,
                        "rollout_return_mean": float(np.mean(returns)) if returns else None,
                        "ent_coef": float(model.log_ent_coef.exp().item())})
        last["row"] = run.evaluate(mean_action, "online", model._n_updates, steps)

    class Evaluate(BaseCallback):
        # SB3 calls this after each environment step and before that step's gradient update.
        def _on_step(self) -> bool:
            steps = self.num_timesteps
            returns = [e["r"] for e in model.ep_info_buffer]
            run.progress.update(steps, **({"return_mean": float(np.mean(returns))} if returns else {}))
            if steps < cfg.online_steps and run.due(steps):  # the last one follows the last update
                evaluate(steps)
            return True

    try:
        model.learn(total_timesteps=cfg.online_steps, callback=Evaluate())
    finally:
        env.close()
    if cfg.online_steps:
        evaluate(cfg.online_steps)
    (run.run_dir / "checkpoints").mkdir(exist_ok=True)
    model.save(run.run_dir / "checkpoints" / "final.zip")
    return run.finish(offline, last["row"], model._n_updates, cfg.online_steps, start)


class Transitions:
    """A flat replay of (s, a, r, s', terminated), offline data first, online steps appended (IQL's
    finetuning keeps both)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.act = np.zeros((capacity, act_dim), np.float32)
        self.rew = np.zeros(capacity, np.float32)
        self.term = np.zeros(capacity, bool)
        self.n = 0

    def add(self, obs, act, rew, next_obs, term) -> None:
        k = len(rew)
        sl = slice(self.n, self.n + k)
        self.obs[sl], self.act[sl], self.rew[sl], self.next_obs[sl], self.term[sl] = obs, act, rew, next_obs, term
        self.n += k

    def add_episodes(self, episodes) -> int:
        """Every step whose target is known: a truncated episode's last step needs its
        final_observation; a terminated one's does not bootstrap, so any next observation serves."""
        for e in episodes:
            last = e.final_observation
            if last is None and e.terminated:
                last = e.observations[-1]
            nxt = e.observations[1:] if last is None else np.concatenate([e.observations[1:], np.asarray(last)[None]])
            k = len(nxt)
            term = np.zeros(k, bool)
            if k == len(e.rewards):
                term[-1] = e.terminated
            self.add(e.observations[:k], e.actions[:k], e.rewards[:k], nxt, term)
        return self.n

    def sample(self, rng: np.random.Generator, batch: int):
        i = rng.integers(0, self.n, batch)
        return self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.term[i]


class _IQL:
    """IQL's parts (Kostrikov et al. 2021, torchrl's ``IQLLoss``): the networks with their loss,
    Adam, the target update, and the transitions it learns from (the offline data, then online)."""

    def __init__(self, cfg: Config, dataset, scaling: Scaling, device: str):
        from tensordict.nn import NormalParamExtractor, TensorDictModule
        from torch import nn
        from torchrl.data import Bounded
        from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
        from torchrl.objectives import IQLLoss, SoftUpdate

        self.cfg, self.device = cfg, device
        S, A, h = dataset.obs_dim, dataset.act_dim, cfg.baseline_hidden
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.actor = ProbabilisticActor(
            TensorDictModule(nn.Sequential(MLP(in_features=S, out_features=2 * A, num_cells=[h, h]),
                                           NormalParamExtractor()), in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"], spec=Bounded(-torch.ones(A), torch.ones(A), (A,)), distribution_class=TanhNormal)
        qvalue = ValueOperator(MLP(in_features=S + A, out_features=1, num_cells=[h, h]), in_keys=["observation", "action"])
        value = ValueOperator(MLP(in_features=S, out_features=1, num_cells=[h, h]), in_keys=["observation"])
        self.loss = IQLLoss(self.actor, qvalue, value, temperature=cfg.iql_temperature, expectile=cfg.iql_expectile,
                            loss_function="l2").to(device)
        self.loss.make_value_estimator(gamma=cfg.gamma)
        self.target = SoftUpdate(self.loss, tau=cfg.tau)
        params = [p for group in (self.loss.actor_network_params, self.loss.qvalue_network_params,
                                  self.loss.value_network_params) for p in group.flatten_keys().values()]
        self.opt = torch.optim.Adam(params, lr=cfg.baseline_lr)
        self.mean, self.std = (torch.as_tensor(x, device=device) for x in (scaling.obs_mean, scaling.obs_std))
        returns = dataset.returns()
        # IQL's locomotion recipe: rewards times 1000 / (the data's return range), 1000 being those
        # tasks' episode length (here --max-ep-len); with --td-reward-shift (AntMaze: -1) the rewards
        # are shifted instead, as IQL does there.
        spread = returns.max() - returns.min()
        self.reward_scale = 1.0 if cfg.td_reward_shift or spread <= 0 else cfg.max_ep_len / spread
        self.data = Transitions(dataset.n_transitions + cfg.online_steps, S, A)
        self.data.add_episodes(dataset.episodes)

    def update(self) -> dict:
        from tensordict import TensorDict

        cfg, mean, std = self.cfg, self.mean, self.std
        o, a, r, o2, term = (torch.as_tensor(x, device=self.device)
                             for x in self.data.sample(self.rng, cfg.baseline_batch_size))
        td = TensorDict({"observation": (o - mean) / std, "action": a.clamp(-1 + 1e-5, 1 - 1e-5),
                         ("next", "observation"): (o2 - mean) / std,
                         ("next", "reward"): (r * self.reward_scale + cfg.td_reward_shift)[:, None],
                         ("next", "terminated"): term[:, None], ("next", "done"): term[:, None]}, [len(r)])
        out = self.loss(td)
        total = out["loss_actor"] + out["loss_qvalue"] + out["loss_value"]
        self.opt.zero_grad()
        total.backward()
        self.opt.step()
        self.target.step()
        return {k: float(out[k].detach()) for k in ("loss_actor", "loss_qvalue", "loss_value")}

    def action(self, obs: np.ndarray, sample: bool = False) -> np.ndarray:
        """The mean action, or with ``sample`` a sampled one (exploration), in the [-1, 1] box."""
        from tensordict import TensorDict
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        kind = ExplorationType.RANDOM if sample else ExplorationType.DETERMINISTIC
        with torch.no_grad(), set_exploration_type(kind):
            o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device).reshape(-1, len(self.mean))
            o = (o - self.mean) / self.std
            return self.actor(TensorDict({"observation": o}, [len(o)]))["action"].cpu().numpy()

    def save(self, path: Path) -> None:
        path.parent.mkdir(exist_ok=True)
        torch.save({"loss": self.loss.state_dict(), "obs_mean": self.mean.cpu(), "obs_std": self.std.cpu(),
                    "reward_scale": self.reward_scale}, path)


def train_iql(run: BaselineRun, dataset, device: str) -> dict:
    """IQL: --iql-offline-updates on the dataset, then one update per environment step, exploring
    with the sampled action."""
    cfg, start = run.cfg, time.time()
    iql = _IQL(cfg, dataset, run.scaling, device)
    offline_progress = Progress(run.logger, "pretrain", cfg.iql_offline_updates, "updates")
    log_every = max(1, cfg.iql_offline_updates // 20)
    for u in range(1, cfg.iql_offline_updates + 1):
        m = iql.update()
        offline_progress.update(u, **m)
        if u % log_every == 0:
            run.logger.log({"phase": "pretrain", "updates": u, "online_steps": 0, **m})
    offline = run.evaluate(iql.action, "pretrain", cfg.iql_offline_updates, 0)
    last, updates = _iql_online(run, iql, offline)
    iql.save(run.run_dir / "checkpoints" / "final.pt")
    return run.finish(offline, last, updates, cfg.online_steps, start)


def _iql_online(run: BaselineRun, iql: _IQL, last: dict) -> tuple[dict, int]:
    """IQL's online phase: one environment step and one update at a time; the newest evaluation
    and the update count."""
    cfg = run.cfg
    run.progress = Progress(run.logger, "online", cfg.online_steps, "steps")  # its rate: the online phase's own
    with contextlib.closing(make_env_with_horizon(cfg.env, cfg.max_ep_len)) as env:
        obs, _ = env.reset(seed=cfg.seed)
        ep_return, ep_returns, updates = 0.0, [], cfg.iql_offline_updates
        for step in range(1, cfg.online_steps + 1):
            a = iql.action(obs, sample=True)[0]
            nxt, r, term, trunc, _ = env.step(run.scaling.from_unit(a))
            iql.data.add(obs[None], a[None], np.array([r], np.float32), nxt[None], np.array([term]))
            ep_return += float(r)
            obs = nxt
            if term or trunc:
                ep_returns.append(ep_return)
                ep_return, (obs, _) = 0.0, env.reset()
            m = iql.update()
            updates += 1
            run.progress.update(step, **({"return_mean": float(np.mean(ep_returns[-10:]))} if ep_returns else {}))
            if run.due(step):
                run.logger.log({"phase": "online", "event": "train", "updates": updates, "online_steps": step,
                                "rollout_return_mean": float(np.mean(ep_returns[-10:])) if ep_returns else None, **m})
                last = run.evaluate(iql.action, "online", updates, step)
    return last, updates


def run_baseline(p: Prepared) -> dict:
    run = BaselineRun(p)
    try:
        if p.cfg.algo == "sac":
            return train_sac(run, p.device)
        return train_iql(run, p.dataset, p.device)
    finally:
        run.envs.close()
        p.logger.close()
