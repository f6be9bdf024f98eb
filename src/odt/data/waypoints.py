"""PointMaze data without a network, by the recipe Minari documents for its own PointMaze datasets
(after D4RL's maze2d): a shortest path over the maze's free cells to the goal's cell, the centre of
each next cell a waypoint, a PD controller toward it, Gaussian noise on its actions; the task goes
on past each goal with a new one (``continuing_task``, ``reset_target``), and an episode ends
(truncated) where a goal is reached."""
from __future__ import annotations

from collections import deque
from types import SimpleNamespace

import numpy as np

from ..envs.make import episode_returns, make_env
from ..logging import Progress
from .trajectories import Episode, TrajectoryDataset


class WaypointController:
    """Actions for a flat PointMaze observation (x, y, vx, vy, goal x, goal y)."""

    def __init__(self, maze, kp: float = 10.0, kd: float = 1.0):
        self.maze, self.kp, self.kd = maze, kp, kd
        self._next: dict[tuple, tuple] = {}  # (cell, goal cell) -> the next cell on a shortest path

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        pos, vel, goal = obs[:2], obs[2:4], obs[4:6]
        cell, goal_cell = self._cell(pos), self._cell(goal)
        target = goal if cell == goal_cell else self.maze.cell_rowcol_to_xy(np.array(self._step(cell, goal_cell)))
        return np.clip(self.kp * (target - pos) - self.kd * vel, -1.0, 1.0).astype(np.float32)

    def _cell(self, xy: np.ndarray) -> tuple[int, int]:
        return tuple(int(i) for i in self.maze.cell_xy_to_rowcol(np.asarray(xy)))

    def _step(self, cell: tuple, goal: tuple) -> tuple:
        if (cell, goal) not in self._next:
            # Breadth-first from the goal: every cell learns its next step toward it at once.
            grid, parent, queue = self.maze.maze_map, {goal: goal}, deque([goal])
            while queue:
                r, c = queue.popleft()
                for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                    if (0 <= nr < len(grid) and 0 <= nc < len(grid[0]) and grid[nr][nc] != 1
                            and (nr, nc) not in parent):
                        parent[(nr, nc)] = (r, c)
                        queue.append((nr, nc))
            for c, p in parent.items():
                self._next[(c, goal)] = p
            self._next.setdefault((cell, goal), goal)  # a cell off the grid (a wall's edge): aim at the goal
        return self._next[(cell, goal)]


def collect_waypoints(env_id: str, transitions: int, seed: int, noise: float = 0.5, name: str = "",
                      log=print) -> TrajectoryDataset:
    """``transitions`` steps of the noisy waypoint controller in ``env_id`` (a PointMaze id)."""
    env = make_env(env_id, evaluation=False, continuing_task=True, reset_target=True,
                   max_episode_steps=transitions + 1)
    controller = WaypointController(env.unwrapped.maze)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    episodes: list[Episode] = []
    o, a, r = [], [], []
    progress = Progress(SimpleNamespace(info=log), "collect", transitions, "steps", every=10.0)
    for step in range(1, transitions + 1):
        act = np.clip(controller(obs) + noise * rng.standard_normal(2), -1.0, 1.0).astype(np.float32)
        nxt, rew, term, trunc, info = env.step(act)
        o.append(obs), a.append(act), r.append(rew)
        if info.get("success") or term or trunc or step == transitions:
            # s_{T+1} with the goal this episode pursued (the environment has already drawn the next)
            final = np.concatenate([nxt[:-2], obs[-2:]]).astype(np.float32)
            episodes.append(Episode(np.array(o, np.float32), np.array(a, np.float32), np.array(r, np.float32),
                                    terminated=bool(term), truncated=not term, final_observation=final))
            o, a, r = [], [], []
            if term or trunc:
                nxt, _ = env.reset()
            else:  # the environment returns the reached goal with this step and draws the next after it
                nxt = np.concatenate([nxt[:-2], env.unwrapped.goal]).astype(np.float32)
        obs = nxt
        progress.update(step, force=step == transitions, episodes=len(episodes))
    env.close()
    meta = {"env_id": env_id, "generator": "odt.data.waypoints.collect_waypoints", "seed": seed,
            "behaviour": f"waypoint controller (shortest path over cells, PD kp 10 kd 1), action noise {noise}"}
    return TrajectoryDataset(episodes, env_id=env_id, name=name, metadata=meta)


def waypoint_reference(env_id: str, episodes: int = 100, seed: int = 0) -> tuple[float, float]:
    """(random, expert) returns for normalized scores, measured as Minari measures its PointMaze
    datasets': uniform random actions and the noiseless controller, each over ``episodes``
    evaluation episodes (D4RL's goals). D4RL's own maze2d references were measured on mujoco-py's
    maze2d, whose episodes score differently."""
    env = make_env(env_id)
    controller = WaypointController(env.unwrapped.maze)
    rng = np.random.default_rng(seed)
    random = episode_returns(env, lambda obs: rng.uniform(-1, 1, 2).astype(np.float32), episodes, seed)
    expert = episode_returns(env, controller, episodes, seed)
    env.close()
    return float(random.mean()), float(expert.mean())
