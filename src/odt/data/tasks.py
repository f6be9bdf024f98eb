"""Multi-task data (--tasks): every task's dataset, checked against its environment, normalized and
padded to the widest task's spaces, merged into one dataset whose episodes know their task."""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from ..config import ConfigError
from ..envs.make import scale_actions_to_unit
from ..envs.multitask import Task, pad, parse_task
from ..scores import reference_of
from .sources import check_matches_env, check_recorded_env, load_dataset
from .trajectories import Episode, TrajectoryDataset


def load_tasks(specs: list[str], cfg, make_env) -> tuple[TrajectoryDataset, list[Task]]:
    """Every task's dataset, checked against its environment, normalized, padded and merged
    (``Episode.task`` says whose it is); targets default to the expert return (else the best in
    the data) for evaluation and twice that for exploration, the paper's ratio."""
    loaded = []
    for spec in specs:
        env_id, source, g_eval, g_online = parse_task(spec)
        env = make_env(env_id)
        if not isinstance(env.action_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
            env.close()  # padding and rescaling are a flat Box's
            raise ConfigError(f"--tasks pads flat observations and continuous actions, and {env_id} has "
                              f"{env.observation_space} and {env.action_space}; train that task alone (--env, --dataset)")
        check_recorded_env(source, env_id, (env.observation_space.shape[0], env.action_space.shape[0]))
        ds = load_dataset(source, download=cfg.download)
        check_matches_env(ds, env)
        low, high = env.action_space.low.astype(np.float32), env.action_space.high.astype(np.float32)
        env.close()
        reference = reference_of(env_id, (None, None), ds.metadata)
        if g_eval is None:
            g_eval = reference[1] if reference is not None else float(ds.returns().max())
            g_online = 2.0 * g_eval
        mean, std = ds.obs_stats()
        loaded.append((Task(env_id, source, g_eval, g_online, reference, mean, std, low, high), ds))
    obs_dim = max(ds.obs_dim for _, ds in loaded)
    act_dim = max(ds.act_dim for _, ds in loaded)
    episodes = []
    for i, (task, ds) in enumerate(loaded):
        for e in ds.episodes:
            final = None if e.final_observation is None else task.observation(e.final_observation, obs_dim)
            episodes.append(Episode(task.observation(e.observations, obs_dim),
                                    pad(scale_actions_to_unit(e.actions, task.act_low, task.act_high), act_dim),
                                    e.rewards, e.terminated, e.truncated, final, task=i))
    name = " + ".join(task.dataset for task, _ in loaded)
    return TrajectoryDataset(episodes, env_id=None, name=name), [task for task, _ in loaded]
