"""The goal-conditioned families (Gymnasium-Robotics): one flat observation layout shared by the
environments and the dataset readers, D4RL's evaluation goals, and Minari datasets with dict
observations made here with the real environment and the minari library."""
import subprocess
import sys
import tempfile

import gymnasium as gym
import minari
import numpy as np
import pytest
from helpers import roundtrip
from minari.data_collector.episode_buffer import EpisodeBuffer

from odt.config import ConfigError
from odt.data.sources import check_matches_env, load_dataset
from odt.envs.make import (
    ANTMAZE_EVAL,
    POINTMAZE_EVAL,
    evaluation_kwargs,
    make_env,
    maze_of,
    private_tempdir,
)


@pytest.fixture(autouse=True)
def _minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def test_flat_observation_is_observation_then_desired_goal():
    env = make_env("PointMaze_UMaze-v3")
    with private_tempdir():  # as make_env does: the maze leaves its model file in the temp dir
        raw = gym.make("PointMaze_UMaze-v3", **evaluation_kwargs("PointMaze_UMaze-v3"))  # the same env, as dicts
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        d, _ = raw.reset(seed=seed)
        assert env.observation_space.shape == (6,) and obs.dtype == np.float32
        np.testing.assert_allclose(obs, np.concatenate([d["observation"], d["desired_goal"]]), rtol=1e-6)
        a = env.action_space.sample()
        np.testing.assert_allclose(env.step(a)[0], np.concatenate([(o := raw.step(a)[0])["observation"],
                                                                    o["desired_goal"]]), rtol=1e-6)
    env.close(), raw.close()


def _cell(env, xy) -> tuple[int, int]:
    return tuple(int(i) for i in env.unwrapped.maze.cell_xy_to_rowcol(np.asarray(xy)))


@pytest.mark.parametrize("env_id, maps, reset_fixed", [("PointMaze_UMaze-v3", POINTMAZE_EVAL, False),
                                                        ("AntMaze_UMaze-v4", ANTMAZE_EVAL, True)])
def test_evaluation_goals_are_d4rl_s(env_id, maps, reset_fixed):
    family, size = maze_of(env_id)
    grid = maps[size]
    goal_cell = next((r, c) for r, row in enumerate(grid) for c, v in enumerate(row) if v == "g")
    env = make_env(env_id)
    starts = set()
    for seed in range(6):  # the goal stays in its cell whatever the seed; the start may not
        obs, _ = env.reset(seed=seed)
        assert _cell(env, obs[-2:]) == goal_cell
        starts.add(_cell(env, env.unwrapped.reset_pos if hasattr(env.unwrapped, "reset_pos") else obs[:2]))
    assert (len(starts) == 1) == reset_fixed
    env.close()


def test_maze_episode_ends_as_d4rl_s():
    # maze2d runs its whole horizon however often the goal is reached; antmaze ends at the goal
    point = make_env("PointMaze_UMaze-v3")
    assert point.unwrapped.continuing_task and not point.unwrapped.reset_target
    ant = make_env("AntMaze_UMaze-v4")
    assert not ant.unwrapped.continuing_task
    point.close(), ant.close()


def _record_pointmaze(dataset_id: str, steps: int) -> None:
    """A small PointMaze dataset as Minari stores its own: dict observations, random goals."""
    with private_tempdir():
        env = gym.make("PointMaze_UMaze-v3", max_episode_steps=50)
    buffers, done = [], 0
    while done < steps:
        obs, _ = env.reset(seed=len(buffers))
        o, a, r = [obs], [], []
        while True:
            act = env.action_space.sample()
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew)
            done += 1
            if term or trunc or done == steps:
                break
        last = np.arange(len(r)) == len(r) - 1
        buffers.append(EpisodeBuffer(id=len(buffers), observations={k: np.array([x[k] for x in o]) for k in o[0]},
                                     actions=np.array(a), rewards=np.array(r), terminations=last & term,
                                     truncations=last & (not term), infos={}))
    minari.create_dataset_from_buffers(dataset_id, buffers, env=env, algorithm_name="random", author="odt tests",
                                       author_email="tests@odt.invalid", description="test data")


def test_minari_goal_dataset_loads_flat_in_the_environments_layout():
    make_env("PointMaze_UMaze-v3").close()  # registers Gymnasium-Robotics
    _record_pointmaze("test/pointmaze/tiny-v0", 230)
    raw = minari.load_dataset("test/pointmaze/tiny-v0")
    ds = load_dataset("test/pointmaze/tiny-v0")
    assert ds.obs_dim == 6 and ds.act_dim == 2 and ds.n_transitions == 230
    for e, r in zip(ds.episodes, raw.iterate_episodes()):
        expect = np.concatenate([r.observations["observation"], r.observations["desired_goal"]], axis=1)
        np.testing.assert_allclose(e.observations, expect[:-1], rtol=1e-6)
        np.testing.assert_allclose(e.final_observation, expect[-1], rtol=1e-6)
        np.testing.assert_allclose(e.rewards, r.rewards, rtol=1e-6)
    check_matches_env(ds, make_env("PointMaze_UMaze-v3"))  # the same layout as the environment's
    again = load_dataset("test/pointmaze/tiny-v0")  # from odt's flat cache
    np.testing.assert_array_equal(again.episodes[-1].observations, ds.episodes[-1].observations)


def test_antmaze_v5_against_v4_data_is_one_line():
    make_env("PointMaze_UMaze-v3").close()
    _record_pointmaze("test/pointmaze/other-v0", 60)
    ds = load_dataset("test/pointmaze/other-v0")
    with pytest.raises(ConfigError, match="observation dimension 6 but AntMaze_UMaze-v5 has 107"):
        check_matches_env(ds, make_env("AntMaze_UMaze-v5"))


def test_policy_acts_on_a_goal_dict_as_on_its_flat_form(tmp_path):
    live, _ = roundtrip(tmp_path / "run", "odt")  # any trained policy; its inputs here are 1-d
    flat = np.array([[0.25]], np.float32)
    as_dict = {"observation": np.zeros((1, 0), np.float32), "desired_goal": flat}
    live.reset(1.0, n=1)
    a = live.act(flat)
    live.reset(1.0, n=1)
    np.testing.assert_array_equal(live.act(as_dict), a)


def test_every_family_is_made_in_a_fresh_process():
    # Gymnasium-Robotics registers on demand whatever id comes first (Adroit ids have no '_')
    code = ("from odt.envs.make import make_env\n"
            "for i in ('AdroitHandPen-v1', 'AntMaze_Open-v4', 'PointMaze_Large-v3'):\n"
            "    print(i, make_env(i).observation_space.shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "AdroitHandPen-v1 (45,)" in out.stdout and "AntMaze_Open-v4 (29,)" in out.stdout


def test_mazes_leave_no_model_file_in_the_temp_dir(tmp_path, monkeypatch):
    # Gymnasium-Robotics writes each maze's MuJoCo model to <tempdir>/ant_maze<time>.xml and never
    # removes it; make_env does, once MuJoCo has loaded it.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    for env_id in ("PointMaze_UMaze-v3", "AntMaze_UMaze-v4", "AntMaze_UMaze-v5"):
        make_env(env_id).close()
    assert list(tmp.iterdir()) == []
    raw = gym.make("PointMaze_UMaze-v3")  # the library alone leaves it
    assert [p.name.startswith("ant_maze") for p in tmp.iterdir()] == [True]
    raw.close()
