"""PointMaze data by Minari's recipe: the controller reaches D4RL's goals, the recording splits at
each goal reached, and `odt data generate --quality waypoints` writes a Minari dataset that loads."""
import numpy as np
import pytest

from odt.cli import main
from odt.data.sources import load_dataset
from odt.data.waypoints import WaypointController, collect_waypoints
from odt.envs.make import make_env


@pytest.fixture(autouse=True)
def _minari_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def _returns(env, act, episodes=4):
    out = []
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            obs, r, term, trunc, _ = env.step(act(obs))
            total, done = total + r, term or trunc
        out.append(total)
    return np.array(out)


@pytest.mark.parametrize("env_id", ["PointMaze_UMaze-v3", "PointMaze_Medium-v3"])
def test_controller_reaches_the_goal_where_random_actions_do_not(env_id):
    env = make_env(env_id)  # D4RL's goal, random start cells, the whole horizon scored
    controller = _returns(env, WaypointController(env.unwrapped.maze))
    rng = np.random.default_rng(0)
    random = _returns(env, lambda o: rng.uniform(-1, 1, 2))
    horizon = env.spec.max_episode_steps
    # within reach of the goal for most of the episode, whatever the start
    assert controller.min() > 0.4 * horizon and random.mean() < 0.2 * horizon
    env.close()


def test_recording_splits_at_each_goal_and_is_reproducible():
    ds = collect_waypoints("PointMaze_UMaze-v3", 3000, seed=5, log=lambda line: None)
    again = collect_waypoints("PointMaze_UMaze-v3", 3000, seed=5, log=lambda line: None)
    assert ds.n_transitions == 3000 and len(ds.episodes) > 10
    for e in ds.episodes[:-1]:  # each ends where its goal is reached: reward 1 there, 0 before
        assert e.truncated and not e.terminated and e.rewards[-1] == 1.0 and e.rewards[:-1].sum() == 0
        assert np.all(e.observations[:, 4:] == e.observations[0, 4:])  # one goal per episode
        np.testing.assert_array_equal(e.final_observation[4:], e.observations[0, 4:])
        assert np.linalg.norm(e.final_observation[:2] - e.final_observation[4:]) <= 0.45 + 1e-6
    np.testing.assert_array_equal(ds.episodes[7].actions, again.episodes[7].actions)


def test_generate_waypoints_writes_a_minari_dataset_with_its_references(capsys):
    assert main(["data", "generate", "--env", "PointMaze_UMaze-v3", "--quality", "waypoints",
                 "--out", "test/pointmaze-v0", "--transitions", "2000"]) == 0
    ds = load_dataset("test/pointmaze-v0")
    assert ds.obs_dim == 6 and ds.n_transitions == 2000 and ds.env_id == "PointMaze_UMaze-v3"
    lo, hi = ds.metadata["ref_min_score"], ds.metadata["ref_max_score"]
    assert 0 <= lo < 0.2 * 300 and hi > 0.4 * 300  # random and controller returns over 100 episodes


def test_waypoints_on_another_family_is_one_line(capsys):
    assert main(["data", "generate", "--env", "Hopper-v5", "--quality", "waypoints", "--out", "test/x-v0"]) == 2
    err = capsys.readouterr().err
    assert "--quality waypoints is the PointMaze recipe" in err and err.count("\n") == 1


def test_embedded_pointmaze_is_made_on_first_use(tmp_path, monkeypatch):
    import odt.data.embedded as embedded

    monkeypatch.setenv("ODT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(embedded.EMBEDDED, "odt/pointmaze-umaze",
                        {**embedded.EMBEDDED["odt/pointmaze-umaze"], "transitions": 2000})  # the recipe, fewer steps
    ds = load_dataset("odt/pointmaze-umaze")
    assert ds.env_id == "PointMaze_UMaze-v3" and ds.obs_dim == 6 and ds.n_transitions == 2000
    assert ds.metadata["ref_max_score"] > ds.metadata["ref_min_score"]
    assert list((tmp_path / "cache" / "datasets").glob("odt__pointmaze-umaze-*.npz"))
