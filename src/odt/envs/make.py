"""Environments for training, evaluation, `odt eval` and data generation: one ``make_env`` that
datasets, rollouts and ``Policy`` users share (goal-conditioned mazes get D4RL's evaluation goals
and a flat observation), the horizon check, vector environments, and the one place where actions
cross between the environment's units and the [-1, 1] box the policy acts in."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager

import gymnasium as gym
import numpy as np

from ..config import ConfigError

R, G = "r", "g"
# The evaluation mazes of D4RL, as Minari's D4RL ports record them in their eval_env: PointMaze
# (maze2d) has one goal cell and random reset cells; AntMaze has one reset and one goal cell.
POINTMAZE_EVAL = {
    "open": [[1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0, 1], [1, 0, 0, G, 0, 0, 1], [1, 0, 0, 0, 0, 0, 1],
             [1, 1, 1, 1, 1, 1, 1]],
    "umaze": [[1, 1, 1, 1, 1], [1, G, 0, 0, 1], [1, 1, 1, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]],
    "medium": [[1, 1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0, 1],
               [1, 1, 0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 1, 0, 1],
               [1, 0, 0, 0, 1, 0, G, 1], [1, 1, 1, 1, 1, 1, 1, 1]],
    "large": [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
              [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0, 0, 1, 0, G, 0, 1],
              [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],
}
ANTMAZE_EVAL = {
    "umaze": [[1, 1, 1, 1, 1], [1, R, 0, 0, 1], [1, 1, 1, 0, 1], [1, G, 0, 0, 1], [1, 1, 1, 1, 1]],
    "medium": [[1, 1, 1, 1, 1, 1, 1, 1], [1, R, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0, 1],
               [1, 1, 0, 0, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 1, 0, 1],
               [1, 0, 0, 0, 1, 0, G, 1], [1, 1, 1, 1, 1, 1, 1, 1]],
    "large": [[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, R, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
              [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
              [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, G, 1],
              [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]],
}


ROBOTICS_PREFIXES = ("PointMaze_", "AntMaze_", "AdroitHand")


def maze_of(env_id: str) -> tuple[str, str] | None:
    """('pointmaze' | 'antmaze', size) for a maze id whose D4RL evaluation maze odt knows, else None
    (AntMaze_Open had none in D4RL: it keeps Gymnasium-Robotics' own goals)."""
    family, _, rest = env_id.partition("_")
    size = rest.split("-")[0].split("_")[0].lower().replace("dense", "").replace("diverse", "")
    maps = {"PointMaze": POINTMAZE_EVAL, "AntMaze": ANTMAZE_EVAL}.get(family, {})
    return (family.lower(), size) if size in maps else None


def evaluation_kwargs(env_id: str) -> dict:
    """How D4RL evaluated each maze family: maze2d runs its whole horizon (reward 1 at every step
    within 0.5 of the goal: continuing), antmaze ends at the goal (return 0 or 1)."""
    maze = maze_of(env_id)
    if maze is None:
        return {}
    family, size = maze
    if family == "pointmaze":
        return {"maze_map": POINTMAZE_EVAL[size], "continuing_task": True, "reset_target": False}
    return {"maze_map": ANTMAZE_EVAL[size], "continuing_task": False}


class GoalObservation(gym.ObservationWrapper):
    """A goal-conditioned dict observation as one vector: ``observation``, then ``desired_goal``
    (PointMaze: x, y, vx, vy, goal x, goal y)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        spaces = env.observation_space
        low = np.concatenate([spaces["observation"].low, spaces["desired_goal"].low]).astype(np.float32)
        high = np.concatenate([spaces["observation"].high, spaces["desired_goal"].high]).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    def observation(self, obs: dict) -> np.ndarray:
        return flatten_goal(obs["observation"], obs["desired_goal"])


@contextmanager
def private_tempdir():
    """Run a construction with ``tempfile``'s directory set to a new one of its own, removed after.

    Why: Gymnasium-Robotics' mazes (PointMaze, AntMaze) write their MuJoCo model, the agent with
    the maze's walls, to <tempdir>/ant_maze<time>.xml and never remove it, not even at close; MuJoCo
    has read it by the time the constructor returns. Environments are made in one thread, so the
    global setting is safe for the moment it lasts."""
    before = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="odt-env-") as d:
        tempfile.tempdir = d
        try:
            yield
        finally:
            tempfile.tempdir = before


def flatten_goal(observation: np.ndarray, desired_goal: np.ndarray) -> np.ndarray:
    """The layout ``GoalObservation`` and the dataset readers share."""
    return np.concatenate([observation, desired_goal], axis=-1).astype(np.float32)


def atari_env(env_id: str, **kwargs) -> gym.Env:
    """An Atari game as the DT paper plays it: 4 frames a step (the last two max-pooled), 84x84
    greyscale, the last 4 stacked (uint8, (4, 84, 84)), up to 30 no-ops at reset, a lost life ends
    nothing; ALE's v5 sticky actions (0.25) stay, as in the DQN Replay data the paper used."""
    try:
        import ale_py  # optional: only for Atari
        import cv2  # noqa: F401  (AtariPreprocessing resizes with it)
    except ImportError as e:
        raise ConfigError(f"{env_id} is an Atari game; install ale-py (its wheels carry the ROMs) and OpenCV with "
                          "`pip install 'odt[atari]'`") from e
    gym.register_envs(ale_py)
    env = gym.make(env_id, frameskip=1, **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=False,
                                         grayscale_obs=True, scale_obs=False)
    return gym.wrappers.FrameStackObservation(env, 4)


def minigrid_env(env_id: str, **kwargs) -> gym.Env:
    """A MiniGrid task as one flat vector: the agent's 7x7 egocentric view of (object, colour,
    state) codes, as float32 (147 numbers). The mission string is left out: a MiniGrid task's
    mission is fixed by its id (BabyAI's, which vary, are not taken)."""
    try:
        import minigrid  # optional: only for MiniGrid
        from minigrid.wrappers import ImgObsWrapper
    except ImportError as e:
        raise ConfigError(f"{env_id} is a MiniGrid task; install MiniGrid with `pip install 'odt[minigrid]'`") from e
    gym.register_envs(minigrid)
    env = gym.wrappers.FlattenObservation(ImgObsWrapper(gym.make(env_id, **kwargs)))
    return gym.wrappers.DtypeObservation(env, np.float32)


def make_env(env_id: str, evaluation: bool = True, **kwargs) -> gym.Env:
    """``gym.make``, with Gymnasium-Robotics' environments registered when an id needs them;
    with ``evaluation``, the mazes get D4RL's evaluation goals; dict observations come flat;
    Atari games (ALE/...) come preprocessed (``atari_env``), MiniGrid tasks as their flat view
    (``minigrid_env``)."""
    if env_id.startswith("ALE/"):
        return atari_env(env_id, **kwargs)
    if env_id.startswith("MiniGrid-"):
        return minigrid_env(env_id, **kwargs)
    if env_id not in gym.registry and env_id.startswith(ROBOTICS_PREFIXES):
        try:
            import gymnasium_robotics  # optional and slow to import: only for its own environments
        except ImportError as e:
            raise ConfigError(f"{env_id} is a Gymnasium-Robotics environment; install it with "
                              "`pip install 'odt[robotics]'`") from e
        gym.register_envs(gymnasium_robotics)
    with private_tempdir():
        env = gym.make(env_id, **{**(evaluation_kwargs(env_id) if evaluation else {}), **kwargs})
    if isinstance(env.observation_space, gym.spaces.Dict) and {"observation", "desired_goal"} <= set(
            env.observation_space.spaces):
        env = GoalObservation(env)
    return env


def episode_returns(env: gym.Env, act, episodes: int, seed: int) -> np.ndarray:
    """The return of each of ``episodes`` episodes of ``act(obs)`` in one environment, episode i
    reset with seed + i (behaviour policies and reference returns; training uses vector envs)."""
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            ret += float(r)
            done = term or trunc
        returns.append(ret)
    return np.array(returns)


def make_env_checked(env_id: str) -> gym.Env:
    try:
        return make_env(env_id)
    except gym.error.Error as e:
        if env_id.startswith("odt-python/"):
            raise ConfigError(f"{env_id} was registered by odt.train in another process; from Python, register it "
                              "again with odt.api.register_env(make_env, max_ep_len) first") from e
        raise ConfigError(f"unknown environment {env_id!r} ({str(e).splitlines()[0]}); "
                          "give a Gymnasium id such as Hopper-v5") from e


def check_spaces(env: gym.Env, env_id: str) -> None:
    """What odt's policies act in and read: a flat Box of actions with finite bounds (the policy
    acts in [-1, 1] and is rescaled to them) or a Discrete space of n actions (a categorical
    policy over their one-hot vectors), and flat Box observations."""
    act, obs = env.action_space, env.observation_space
    if isinstance(act, gym.spaces.Discrete):
        if act.start != 0:
            raise ConfigError(f"{env_id}'s actions are numbered from {act.start}; odt takes Discrete(n) spaces that "
                              "start at 0: wrap the environment to shift its actions")
    elif not isinstance(act, gym.spaces.Box) or len(act.shape) != 1:
        raise ConfigError(f"{env_id} has a {act} action space; odt takes a flat continuous (Box) or a Discrete "
                          "action space: flatten the environment's actions or choose another environment")
    elif not (np.isfinite(act.low).all() and np.isfinite(act.high).all()):
        raise ConfigError(f"{env_id}'s action space {act} is unbounded; odt rescales actions to the bounds: wrap "
                          "the environment in gymnasium.wrappers.RescaleAction or clip it to finite bounds")
    # Stacked frames: bytes, channels first, large enough for the DQN convolutions (36x36 at least).
    frames = (isinstance(obs, gym.spaces.Box) and bool(frame_shape(obs)) and obs.dtype == np.uint8
              and min(obs.shape[1:]) >= 36)
    if not isinstance(obs, gym.spaces.Box) or not (len(obs.shape) == 1 or frames):
        raise ConfigError(f"{env_id} has a {obs} observation space; odt needs flat Box observations, stacked "
                          "frames (uint8, channels first, 36x36 or larger: gymnasium.wrappers.AtariPreprocessing "
                          "and FrameStackObservation), or a goal dict with 'observation' and 'desired_goal': wrap "
                          "it in gymnasium.wrappers.FlattenObservation")


def frame_shape(space: gym.Space) -> tuple[int, ...]:
    """Stacked frames' (C, H, W), which the model's convolutions read; () for a flat observation."""
    return tuple(space.shape) if len(space.shape) == 3 else ()


def obs_width(space: gym.Space) -> int:
    """An observation's width as the data and the buffer hold it: flat, frames flattened."""
    return int(np.prod(space.shape))


def action_width(space: gym.Space) -> int:
    """An action's width as the networks see it: a Box's dimension, or n, the one-hot vector of a
    Discrete(n) space's index."""
    return int(space.n) if isinstance(space, gym.spaces.Discrete) else int(space.shape[0])


def make_env_with_horizon(env_id: str, max_ep_len: int) -> gym.Env:
    """The environment, refused when odt cannot act in it or its episodes can outlast the
    timestep embedding."""
    env = make_env_checked(env_id)
    try:
        check_spaces(env, env_id)
    except ConfigError:
        env.close()
        raise
    horizon = env.spec.max_episode_steps if env.spec else None
    if horizon and horizon > max_ep_len:
        env.close()
        raise ConfigError(f"{env_id} episodes last up to {horizon} steps but --max-ep-len is {max_ep_len}; "
                          f"pass --max-ep-len {horizon}")
    return env


def make_vector_env(env_id: str, n: int) -> gym.vector.VectorEnv:
    # Synchronous: MuJoCo steps take microseconds, the policy's forward pass dominates, and
    # subprocesses would compete with torch for the cores.
    return gym.vector.SyncVectorEnv([lambda: make_env(env_id) for _ in range(n)])


def scale_actions_to_unit(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map environment actions into [-1, 1], the box the policy acts in."""
    return (2.0 * (actions - low) / (high - low) - 1.0).astype(np.float32)


def scale_actions_from_unit(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The inverse of ``scale_actions_to_unit``: [-1, 1] back to the environment's bounds."""
    return low + (actions + 1.0) * 0.5 * (high - low)
