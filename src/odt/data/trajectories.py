"""Episodes, offline datasets and the math on them (returns-to-go, observation statistics)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Episode:
    """One trajectory. ``terminated``: the task ended (no bootstrapping past it);
    ``truncated``: cut by a time limit or the end of the data."""

    observations: np.ndarray  # (T, obs_dim) float32, or uint8 for frames (flattened: stacked 84x84 frames)
    actions: np.ndarray  # (T, act_dim) float32
    rewards: np.ndarray  # (T,) float32
    terminated: bool = False
    truncated: bool = False
    final_observation: np.ndarray | None = None  # s_{T+1}, where known
    online: bool = False
    target: float | None = None  # the return-to-go an online rollout was conditioned on
    task: int = 0  # multi-task runs: the index of the task it belongs to

    def __post_init__(self) -> None:
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def ret(self) -> float:
        return float(self.rewards.sum(dtype=np.float64))


def is_frames(x: np.ndarray) -> bool:
    """Stacked frames are the one kind of observation kept as bytes: a quarter of float32's size,
    normalized by the pixels' range once drawn."""
    return x.dtype == np.uint8


def observation_rows(x) -> np.ndarray:
    """Observations (T, ...) as one flat row a step: float32, or bytes for frames."""
    x = np.asarray(x)
    x = x if is_frames(x) else x.astype(np.float32)
    return x.reshape(len(x), -1)


def returns_to_go(rewards: np.ndarray) -> np.ndarray:
    """g_t = sum_{j >= t} r_j (undiscounted, as in DT and ODT)."""
    r = np.asarray(rewards, dtype=np.float64)
    return np.cumsum(r[::-1])[::-1].astype(np.float32)


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = sum_{j >= t} gamma^(j - t) r_j, to the end of the episode (the recursion G_t = r_t +
    gamma G_{t+1} run backwards as a linear filter: one C loop, exact at any length)."""
    from scipy.signal import lfilter  # scipy takes 0.7 s to import: only where a TD3 run needs it

    r = np.asarray(rewards, dtype=np.float64)[::-1]
    return lfilter([1.0], [1.0, -gamma], r)[::-1].astype(np.float32)


@dataclass
class TrajectoryDataset:
    episodes: list[Episode]
    env_id: str | None = None
    name: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def obs_dim(self) -> int:
        return self.episodes[0].observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.episodes[0].actions.shape[1]

    @property
    def n_transitions(self) -> int:
        return sum(len(e) for e in self.episodes)

    def returns(self) -> np.ndarray:
        return np.array([e.ret for e in self.episodes])

    def lengths(self) -> np.ndarray:
        return np.array([len(e) for e in self.episodes])

    def describe(self) -> dict:
        """The figures `odt data inspect` prints."""
        r, n = self.returns(), self.lengths()
        return {"name": self.name, "env_id": self.env_id, "n_episodes": len(self.episodes),
                "n_transitions": int(n.sum()), "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "return_mean": float(r.mean()), "return_std": float(r.std()), "return_min": float(r.min()),
                "return_max": float(r.max()), "length_mean": float(n.mean()), "length_min": int(n.min()),
                "length_max": int(n.max()), "n_terminated": sum(e.terminated for e in self.episodes),
                "n_truncated": sum(e.truncated for e in self.episodes)}

    def obs_stats(self, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of every state in the data (float64 sums, so 1M rows lose nothing); frames
        (bytes) take 0 and 255, the pixels' range, as the DT paper's Atari encoder does."""
        if is_frames(self.episodes[0].observations):
            return np.zeros(self.obs_dim, np.float32), np.full(self.obs_dim, 255.0, np.float32)
        n, s, ss = 0, 0.0, 0.0
        for e in self.episodes:
            o = e.observations.astype(np.float64)
            n += len(o)
            s = s + o.sum(0)
            ss = ss + (o * o).sum(0)
        mean = s / n
        std = np.sqrt(np.maximum(ss / n - mean * mean, 0.0)) + eps
        return mean.astype(np.float32), std.astype(np.float32)


def flatten_episodes(episodes: list[Episode]) -> dict[str, np.ndarray]:
    """The inverse of ``split_episodes``: D4RL's flat arrays (terminal or timeout on each
    episode's last step), plus ``final_observations``, one row per episode, when all are known."""
    last = [np.arange(len(e)) == len(e) - 1 for e in episodes]
    arrays = {"observations": np.concatenate([e.observations for e in episodes]),
              "actions": np.concatenate([e.actions for e in episodes]),
              "rewards": np.concatenate([e.rewards for e in episodes]),
              "terminals": np.concatenate([m & e.terminated for m, e in zip(last, episodes)]),
              "timeouts": np.concatenate([m & (not e.terminated) for m, e in zip(last, episodes)])}
    if all(e.final_observation is not None for e in episodes):
        arrays["final_observations"] = observation_rows(np.stack([e.final_observation for e in episodes]))
    return arrays


def episode_ends(terminals: np.ndarray, timeouts: np.ndarray) -> np.ndarray:
    """Index of the last step of every episode in flat D4RL-style arrays, a trailing partial
    episode included (the data simply ends there)."""
    done = np.asarray(terminals, dtype=bool).reshape(-1) | np.asarray(timeouts, dtype=bool).reshape(-1)
    ends = np.flatnonzero(done)
    if len(done) and (not len(ends) or ends[-1] != len(done) - 1):
        ends = np.append(ends, len(done) - 1)
    return ends


def split_episodes(observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                   terminals: np.ndarray, timeouts: np.ndarray,
                   final_observations: np.ndarray | None = None) -> list[Episode]:
    """Cut flat D4RL-style arrays into episodes (views, no copies) at terminals and timeouts.
    ``final_observations`` holds s_{T+1} of each episode, one row per episode, where known."""
    terminals = np.asarray(terminals, dtype=bool).reshape(-1)
    episodes, start = [], 0
    for i, last in enumerate(episode_ends(terminals, timeouts)):
        stop = last + 1
        term = bool(terminals[last])
        episodes.append(Episode(
            observations=observations[start:stop], actions=actions[start:stop],
            rewards=rewards[start:stop], terminated=term, truncated=not term,
            final_observation=None if final_observations is None else final_observations[i]))
        start = stop
    return episodes
