"""`odt data generate`: real SAC training (briefly), real Hopper-v5, a real Minari store."""
import json

import numpy as np
import pytest

from odt.cli import main
from odt.data.sources import load_dataset


@pytest.fixture(autouse=True)
def _stores(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("ODT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _metadata(tmp_path, dataset_id):
    return json.loads((tmp_path / "minari" / dataset_id / "data" / "metadata.json").read_text())


def test_random_dataset_and_its_metadata(tmp_path, capsys):
    assert main(["data", "generate", "--env", "Hopper-v5", "--quality", "random", "--transitions", "500",
                 "--out", "gen/hopper-random-v0", "--seed", "3"]) == 0
    assert "[collect] 500/500 steps" in capsys.readouterr().out  # progress is shown
    ds = load_dataset("gen/hopper-random-v0")
    assert ds.n_transitions == 500 and ds.env_id == "Hopper-v5"
    meta = _metadata(tmp_path, "gen/hopper-random-v0")
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (-20.272305, 3234.3)
    assert meta["odt"]["quality"] == "random" and meta["odt"]["seed"] == 3
    assert {"gymnasium", "mujoco", "minari"} <= meta["odt"]["versions"].keys()
    # an existing id is never overwritten
    assert main(["data", "generate", "--env", "Hopper-v5", "--quality", "random", "--transitions", "10",
                 "--out", "gen/hopper-random-v0"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert load_dataset("gen/hopper-random-v0").n_transitions == 500


@pytest.mark.slow
def test_medium_then_medium_replay_with_a_trained_policy(tmp_path, capsys):
    # A target any policy reaches: training stops at the first evaluation, after 300 SAC steps.
    common = ["--env", "Hopper-v5", "--target-return", "-1000", "--eval-every", "300", "--eval-episodes", "1"]
    assert main(["data", "generate", *common, "--quality", "medium", "--transitions", "400",
                 "--out", "gen/hopper-medium-v0"]) == 0
    out = capsys.readouterr().out
    assert "[sac] 300/1000000 steps" in out and "[collect] 400/400 steps" in out
    meta = _metadata(tmp_path, "gen/hopper-medium-v0")["odt"]
    assert meta["behaviour"]["train_steps"] == 300 and meta["behaviour"]["reached_target"]
    assert meta["target_return"] == -1000 and "stable_baselines3" in meta["behaviour"]["versions"]
    assert (tmp_path / "minari" / "gen/hopper-medium-v0" / "behaviour_policy.safetensors").is_file()
    assert load_dataset("gen/hopper-medium-v0").n_transitions == 400

    # The same work dir holds that policy: refused unless reused explicitly.
    work = tmp_path / "runs" / "generate" / "gen__hopper-medium-v0"
    assert main(["data", "generate", *common, "--quality", "medium", "--transitions", "50",
                 "--out", "gen/again-v0", "--work-dir", str(work)]) == 2
    assert "--policy" in capsys.readouterr().err
    assert main(["data", "generate", "--env", "Hopper-v5", "--quality", "medium", "--transitions", "50",
                 "--out", "gen/again-v0", "--policy", str(work / "policy.safetensors")]) == 0

    assert main(["data", "generate", *common, "--quality", "medium-replay", "--transitions", "250",
                 "--out", "gen/hopper-medium-replay-v0", "--work-dir", str(tmp_path / "w2")]) == 0
    replay = np.load(tmp_path / "w2" / "replay.npz")
    ds = load_dataset("gen/hopper-medium-replay-v0")
    assert ds.n_transitions == 250  # the buffer's first 250 of its 300 steps, in order
    np.testing.assert_allclose(np.concatenate([e.rewards for e in ds.episodes]), replay["rewards"][:250], rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([e.actions for e in ds.episodes]), replay["actions"][:250], rtol=1e-6)


@pytest.mark.parametrize("args,needle", [
    (["--env", "Nope-v0", "--quality", "random", "--out", "gen/x-v0"], "unknown environment"),
    (["--env", "Hopper-v5", "--quality", "random", "--out", "not an id"], "not a Minari dataset id"),
    (["--env", "Hopper-v5", "--quality", "random", "--out", "gen/x-v0", "--transitions", "0"], "must be positive"),
    (["--env", "CartPole-v1", "--quality", "medium", "--out", "gen/x-v0"], "--target-return"),
    (["--env", "Hopper-v5", "--quality", "medium", "--out", "gen/x-v0", "--policy", "/nonexistent.safetensors"],
     "cannot read behaviour policy"),
])
def test_bad_generate_arguments(args, needle, capsys):
    assert main(["data", "generate", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
