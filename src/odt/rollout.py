"""Batched rollouts over a Gymnasium vector environment: one forward pass per step for all of its
environments, episodes back in the [-1, 1] action box."""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from .data.trajectories import Episode, observation_rows
from .envs.make import make_vector_env, scale_actions_from_unit, scale_actions_to_unit  # noqa: F401  (old paths)
from .policy import EnsemblePolicy, Policy


@dataclass
class RolloutResult:
    episodes: list[Episode]
    env_index: list[int]  # which environment of the vector env each episode ran in

    @property
    def returns(self) -> np.ndarray:
        return np.array([e.ret for e in self.episodes])

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(e) for e in self.episodes])

    @property
    def steps(self) -> int:
        return int(self.lengths.sum())


def rollout(policy: Policy | EnsemblePolicy, envs: gym.vector.VectorEnv, target_return: float | np.ndarray, seed: int,
            max_steps: int | None = None) -> RolloutResult:
    """One episode in each of the vector env's environments, all stepped together with one batched
    forward pass per step. Finished environments drop out of the forward pass. With ``max_steps``,
    the rollout stops once that many steps are taken in all; unfinished episodes end truncated."""
    n = envs.num_envs
    obs, _ = envs.reset(seed=seed)
    policy.reset(target_return, n=n)
    act_dim = policy.model.spec.act_dim
    ep_obs = [[] for _ in range(n)]
    ep_act = [[] for _ in range(n)]
    ep_rew = [[] for _ in range(n)]
    done = np.zeros(n, dtype=bool)
    final: list = [None] * n
    terminated = np.zeros(n, dtype=bool)
    rewards = np.zeros(n, dtype=np.float32)
    # What the environments take: indices of discrete actions, else vectors in their units.
    discrete = isinstance(envs.single_action_space, gym.spaces.Discrete)
    actions = np.zeros(n, np.int64) if discrete else np.zeros((n, act_dim), np.float32)
    total = 0
    while not done.all():
        rows = np.flatnonzero(~done)
        if max_steps is not None and total + len(rows) > max_steps:
            rows = rows[:max_steps - total]  # the budget ends inside this step: the others stop here
        actions[rows] = policy.act(obs[rows], rewards[rows], rows=rows)
        policy.advance()
        next_obs, rew, term, trunc, _ = envs.step(actions)
        for i in rows:
            ep_obs[i].append(obs[i])
            ep_act[i].append(actions[i].copy())
            ep_rew[i].append(rew[i])
            if term[i] or trunc[i]:
                done[i], terminated[i], final[i] = True, bool(term[i]), next_obs[i].copy()
        total += len(rows)
        if max_steps is not None and total >= max_steps:
            for i in np.flatnonzero(~done):  # cut by the budget: truncated, s_{T+1} known where stepped
                done[i], final[i] = True, (next_obs[i] if i in rows else obs[i]).copy()
        rewards = rew.astype(np.float32)
        obs = next_obs
    episodes = [Episode(observation_rows(ep_obs[i]),
                        policy.scaling.to_unit(np.asarray(ep_act[i], np.float32)),
                        np.asarray(ep_rew[i], np.float32), terminated=bool(terminated[i]),
                        truncated=not terminated[i], final_observation=observation_rows([final[i]])[0], online=True,
                        target=float(np.broadcast_to(target_return, (n,))[i]))
                for i in range(n) if ep_rew[i]]  # a budget can end before an environment's first step
    return RolloutResult(episodes, [i for i in range(n) if ep_rew[i]])
