"""The trajectory-level replay buffer (ODT Algorithm 1) and window sampling (Algorithms 2-3)."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import Config
from .trajectories import Episode, discounted_returns, flatten_episodes, is_frames, returns_to_go, split_episodes

if TYPE_CHECKING:  # a type only: the normalizer's two arrays are what the buffer keeps of it
    from ..scaling import Scaling


@dataclass
class Batch:
    """B windows of K steps, right-padded; ``mask`` is 1 on real steps."""

    states: torch.Tensor  # (B, K, obs_dim), normalized
    actions: torch.Tensor  # (B, K, act_dim)
    rtg: torch.Tensor  # (B, K, 1), divided by rtg_scale
    timesteps: torch.Tensor  # (B, K) long
    mask: torch.Tensor  # (B, K) float
    rewards: torch.Tensor  # (B, K)
    # For a critic (sample(..., with_next=True)): the window shifted by one step, s_{t+1} and the
    # tokens the actor sees there, whether step t terminated, and where a TD target exists.
    next_states: torch.Tensor | None = None  # (B, K, obs_dim), normalized
    next_actions: torch.Tensor | None = None  # (B, K, act_dim): a_{t+1}, 0 past the episode's end
    next_rtg: torch.Tensor | None = None  # (B, K, 1): g_{t+1} = g_t - r_t, hindsight
    terminals: torch.Tensor | None = None  # (B, K) float: 1 where step t ended the task
    critic_mask: torch.Tensor | None = None  # (B, K) float: mask, less steps with no known s_{t+1}
    # What Q(s_t, a_t) would be with a perfect critic of the data's own policy: sum_k gamma^k
    # (r_{t+k} + reward shift) to the episode's end, bootstrapped nowhere (a truncated episode's
    # last steps read low). Only a metric: it tells how far ahead the critic sees.
    mc_returns: torch.Tensor | None = None  # (B, K)

    @staticmethod
    def of(windows: torch.Tensor, mask: torch.Tensor, columns: dict[str, slice],
           frames: torch.Tensor | None = None) -> "Batch":
        """The batch that ``windows`` (B, K, F: every field of every step, side by side, masked)
        holds; each field a view of its columns (``ReplayBuffer.columns``); the states are
        ``frames`` where the observations are frames, which the windows do not hold."""
        def col(name: str) -> torch.Tensor:  # (B, K, width); (B, K) for a number a step but rtg's
            cols = columns[name]
            return windows[..., cols.start] if name in ("rewards", "timesteps", "terminals", "bootstrap",
                                                        "mc_returns") else windows[..., cols]

        mask = mask.to(windows.dtype)
        batch = Batch(states=col("states") if frames is None else frames, actions=col("actions"), rtg=col("rtg"),
                      timesteps=col("timesteps").long(), mask=mask, rewards=col("rewards"))
        if "next_states" in columns:
            batch.next_states, batch.next_actions = col("next_states"), col("next_actions")
            batch.next_rtg, batch.terminals = col("next_rtg"), col("terminals")
            batch.critic_mask = mask * col("bootstrap")
            batch.mc_returns = col("mc_returns")
        return batch


@dataclass(frozen=True)
class Sampling:
    """How a buffer's trajectories become batches: the config's settings, gathered (``of``)."""

    rtg_scale: float  # returns-to-go are divided by it
    keep_next: bool  # the window shifted by one step, for a TD3 critic
    priority_alpha: float | None  # None: trajectories drawn by length (the paper), else by priority^alpha
    hindsight: bool  # relabel online trajectories with the returns they achieved
    gamma: float  # the critics' discount and reward shift, for ``mc_returns``
    reward_shift: float

    @classmethod
    def of(cls, cfg: Config) -> "Sampling":
        return cls(cfg.rtg_scale, cfg.td3, cfg.priority_alpha if cfg.sampling == "return" else None, cfg.hindsight,
                   cfg.gamma, cfg.td_reward_shift)


class ReplayBuffer:
    """A FIFO of whole trajectories.

    Age order is the deque order, oldest first. Offline trajectories are inserted lowest return
    first, so they are older than any online one and leave in order of return; online ones
    leave first-in-first-out.

    ``sampling.priority_alpha``: None samples a trajectory with probability proportional to its
    length (the paper); a number samples it proportional to priority^alpha, priority being its
    return shifted so that the lowest in the buffer has 1% of the range (it stays reachable).
    ``sampling.hindsight``: False conditions online trajectories on the return-to-go they were
    rolled out with (target minus rewards so far) instead of the return they achieved (an ablation).
    ``offline``: the run's offline trajectories, which its state names by index (a resumed run
    loads the same data again).

    Its steps live on ``device``, packed side by side (``columns``), once per change: a batch is
    a few index operations and one gather there, and the host draws only the B window starts
    (numpy's generator, so that a run's batches are the same on every device).
    """

    def __init__(self, capacity: int, scaling: Scaling, sampling: Sampling, offline: Sequence[Episode] = (),
                 device: str | torch.device = "cpu"):
        if capacity <= 0:
            raise ValueError("buffer capacity must be positive")
        self.capacity = capacity
        self.device = torch.device(device)
        self.obs_mean = scaling.obs_mean
        self.obs_std = scaling.obs_std
        self.sampling = sampling
        self.offline = offline
        self.episodes: deque[Episode] = deque()
        self._packed: dict[str, np.ndarray] | None = None

    # --- contents -------------------------------------------------------------------
    def fill(self, offline: list[Episode], n: int | None = None, rng: np.random.Generator | None = None) -> None:
        """Fill with the top-``n`` offline trajectories by return (all of them if fewer), or, given
        ``rng``, with ``n`` drawn at random (the seeding ablation). Ties keep dataset order, so the
        choice is reproducible."""
        n = self.capacity if n is None else min(n, self.capacity)
        returns = np.array([e.ret for e in offline])
        if rng is None:
            order = np.argsort(-returns, kind="stable")[:n]
        else:
            order = rng.choice(len(offline), size=min(n, len(offline)), replace=False)
        for i in sorted(order, key=lambda i: (returns[i], -i)):  # lowest return = oldest
            self.episodes.append(offline[i])
        self._packed = None

    def state_dict(self) -> dict:
        """The contents: offline trajectories by their index in ``offline``, online ones whole, with
        their targets and tasks."""
        index = {id(e): i for i, e in enumerate(self.offline)}
        order, online = [], []
        for e in self.episodes:
            if id(e) in index:
                order.append(index[id(e)])
            else:
                order.append(-1 - len(online))
                online.append(e)
        state = {"order": torch.tensor(order, dtype=torch.long)}
        if online:
            state["online"] = {k: torch.from_numpy(v) for k, v in flatten_episodes(online).items()}
            state["online_targets"] = torch.tensor([np.nan if e.target is None else e.target for e in online],
                                                   dtype=torch.float64)
            state["online_tasks"] = torch.tensor([e.task for e in online], dtype=torch.long)
        return state

    def load_state_dict(self, state: dict) -> None:
        """The counterpart of ``state_dict``, into an empty buffer."""
        online = []
        if "online" in state:
            online = split_episodes(**{k: v.numpy() for k, v in state["online"].items()})
            for e, g, t in zip(online, state["online_targets"].tolist(), state["online_tasks"].tolist()):
                e.online = True
                e.target = None if np.isnan(g) else g
                e.task = int(t)
        for i in state["order"].tolist():
            self.episodes.append(self.offline[i] if i >= 0 else online[-1 - i])
        self._packed = None

    def fill_per_task(self, offline: list[Episode], n_tasks: int, rng: np.random.Generator | None = None) -> None:
        """``fill``, with an equal share of the capacity for each of ``n_tasks`` tasks (0: one task), so
        that no task's return scale crowds out another's."""
        groups = [[e for e in offline if e.task == t] for t in range(n_tasks)] if n_tasks else [offline]
        for group in groups:
            self.fill(group, self.capacity // len(groups), rng=rng)

    def add(self, episode: Episode) -> list[Episode]:
        """Append a new trajectory; return the evicted ones."""
        self.episodes.append(episode)
        evicted = []
        while len(self.episodes) > self.capacity:
            evicted.append(self.episodes.popleft())
        self._packed = None
        return evicted

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def n_transitions(self) -> int:
        return sum(len(e) for e in self.episodes)

    def sampling_probabilities(self) -> np.ndarray:
        """p(tau) = |tau| / sum |tau'| (Algorithm 2, line 2), or priority^alpha normalized."""
        if self.sampling.priority_alpha is None:
            lengths = np.array([len(e) for e in self.episodes], dtype=np.float64)
            return lengths / lengths.sum()
        returns = np.array([e.ret for e in self.episodes], dtype=np.float64)
        spread = returns.max() - returns.min()
        priority = returns - returns.min() + (0.01 * spread if spread > 0 else 1.0)
        w = priority ** self.sampling.priority_alpha
        return w / w.sum()

    # --- sampling -------------------------------------------------------------------
    def _pack(self) -> dict:
        """The buffer's steps, packed once per change: ``steps`` (N, F) on the device, every field of
        every step side by side (``columns``); ``end`` (N,), one past each step's episode end, there
        too; ``starts`` and ``lengths`` of the trajectories on the host, for drawing."""
        if self._packed is None:
            eps = list(self.episodes)
            lengths = np.array([len(e) for e in eps], dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            obs = np.concatenate([e.observations for e in eps])
            frames = is_frames(obs)
            fields = {
                **({} if frames else {"states": (obs.astype(np.float32) - self.obs_mean) / self.obs_std}),
                "actions": np.concatenate([e.actions for e in eps]).astype(np.float32),
                # Hindsight relabelling (Algorithm 2, line 6): RTGs come from the rewards actually
                # obtained, whatever target the rollout was conditioned on (unless switched off).
                "rtg": np.concatenate([self._rtg(e) for e in eps]) / np.float32(self.sampling.rtg_scale),
                "rewards": np.concatenate([e.rewards for e in eps]).astype(np.float32),
                "timesteps": np.concatenate([np.arange(n) for n in lengths]).astype(np.float32),  # exact below 2^24
            }
            if self.sampling.keep_next:
                fields.update(self._pack_next(eps))
            columns = [np.asarray(x, np.float32).reshape(len(obs), -1) for x in fields.values()]
            widths = np.cumsum([0] + [c.shape[1] for c in columns])
            self.columns = {name: slice(int(a), int(b)) for name, a, b in zip(fields, widths[:-1], widths[1:])}
            self._packed = {
                "steps": torch.from_numpy(np.concatenate(columns, axis=1)).to(self.device),
                "end": torch.from_numpy(np.repeat(starts + lengths, lengths)).to(self.device),
                "starts": starts, "lengths": lengths, "n": len(obs),
            }
            if frames:
                self._packed.update(frames=torch.from_numpy(obs).to(self.device),
                                    obs_mean=torch.from_numpy(self.obs_mean).to(self.device),
                                    obs_std=torch.from_numpy(self.obs_std).to(self.device))
        return self._packed

    def _rtg(self, e: Episode) -> np.ndarray:
        if self.sampling.hindsight or e.target is None:
            return returns_to_go(e.rewards)
        # What the policy was told while acting: the target less the rewards received so far.
        before = np.concatenate([[0.0], np.cumsum(e.rewards, dtype=np.float64)[:-1]])
        return (e.target - before).astype(np.float32)

    def _pack_next(self, eps: list[Episode]) -> dict[str, np.ndarray]:
        """Per step t: s_{t+1} (the episode's final observation after its last step), a_{t+1},
        g_{t+1}, whether t terminated, and whether a TD target exists (not after the last step of a
        truncated episode whose final observation is unknown)."""
        nxt, nxt_act, nxt_rtg, term, ok, mc = [], [], [], [], [], []
        for e in eps:
            mc.append(discounted_returns(e.rewards + np.float32(self.sampling.reward_shift), self.sampling.gamma))
            T = len(e)
            last = e.final_observation if e.final_observation is not None else e.observations[-1]
            nxt.append(np.concatenate([e.observations[1:], np.asarray(last, np.float32)[None]]))
            nxt_act.append(np.concatenate([e.actions[1:], np.zeros((1, e.actions.shape[1]), np.float32)]))
            g = self._rtg(e)
            nxt_rtg.append(np.append(g[1:], g[-1] - e.rewards[-1]))
            term.append(np.arange(T) == T - 1 if e.terminated else np.zeros(T, bool))
            ok.append(np.ones(T, bool) if e.terminated or e.final_observation is not None else np.arange(T) < T - 1)
        return {"next_states": (np.concatenate(nxt).astype(np.float32) - self.obs_mean) / self.obs_std,
                "next_actions": np.concatenate(nxt_act).astype(np.float32),
                "next_rtg": np.concatenate(nxt_rtg) / np.float32(self.sampling.rtg_scale),
                "terminals": np.concatenate(term).astype(np.float32),
                "bootstrap": np.concatenate(ok).astype(np.float32),
                "mc_returns": np.concatenate(mc).astype(np.float32)}

    def draw(self, batch_size: int, K: int, rng: np.random.Generator) -> tuple:
        """B windows of K steps, (B, K, F) with every field (``columns``) masked, the mask (B, K),
        and, where the observations are frames, their normalized states (B, K, obs_dim), else None.
        Algorithm 3 in one draw: a uniform step over all stored steps picks a trajectory with
        probability proportional to its length and a start uniform within it. Prioritized: the
        trajectory by priority, then a start uniform within it."""
        p = self._pack()
        if self.sampling.priority_alpha is None:
            first = rng.integers(0, p["n"], size=batch_size)
        else:
            traj = rng.choice(len(p["lengths"]), size=batch_size, p=self.sampling_probabilities())
            first = p["starts"][traj] + (rng.random(batch_size) * p["lengths"][traj]).astype(np.int64)
        first = torch.from_numpy(first).to(self.device, non_blocking=True)[:, None]
        idx = first + torch.arange(K, device=self.device)
        mask = idx < p["end"][first]
        idx = torch.where(mask, idx, first)  # any valid row; masked out below
        frames = None
        if "frames" in p:
            frames = (p["frames"][idx].float() - p["obs_mean"]) / p["obs_std"] * mask[..., None]
        return p["steps"][idx] * mask[..., None], mask, frames

    def sample(self, batch_size: int, K: int, rng: np.random.Generator) -> Batch:
        windows, mask, frames = self.draw(batch_size, K, rng)
        return Batch.of(windows, mask, self.columns, frames)
