"""Normalized scores against hand-computed values, and which reference a run scores against."""
import numpy as np
import pytest

from odt import normalized_score
from odt.config import Config, ConfigError
from odt.scores import reference_of, return_stats, task_of


@pytest.mark.parametrize("env_id,task", [
    ("Hopper-v5", "hopper"), ("Walker2d-v5", "walker2d"), ("HalfCheetah-v5", "halfcheetah"), ("Ant-v5", "ant"),
    ("hopper-medium-replay-v2", "hopper"), ("AntMaze_UMaze-v5", "antmaze"),
    ("AntMaze_Medium_Diverse_GR-v4", "antmaze"), ("antmaze-umaze-diverse-v2", "antmaze"),
    ("AdroitHandPen-v1", "pen"), ("AdroitHandHammer-v1", "hammer"), ("AdroitHandDoor-v1", "door"),
    ("AdroitHandRelocate-v1", "relocate"), ("PointMaze_UMaze-v3", "maze2d-umaze"),
    ("PointMaze_MediumDense-v3", "maze2d-medium-dense"), ("PointMaze_Large-v3", "maze2d-large"),
    ("CartPole-v1", "cartpole"), ("Pendulum-v1", None), (None, None),
])
def test_task_of(env_id, task):
    assert task_of(env_id) == task


def test_normalized_scores_by_hand():
    # 100 * (R - random) / (expert - random), D4RL's infos.py values
    assert normalized_score("Hopper-v5", 3234.3) == pytest.approx(100.0)
    assert normalized_score("hopper", -20.272305) == pytest.approx(0.0)
    assert normalized_score("Hopper-v5", 1607.0139475) == pytest.approx(50.0)
    assert normalized_score("Walker2d-v5", 1000.0) == pytest.approx(100 * (1000 - 1.629008) / (4592.3 - 1.629008))
    assert normalized_score("AdroitHandPen-v1", 96.262799 + 0.25 * (3076.8331017826877 - 96.262799)) \
        == pytest.approx(25.0)
    assert normalized_score("PointMaze_UMaze-v3", 161.86) == pytest.approx(100.0)
    np.testing.assert_allclose(normalized_score("AntMaze_UMaze-v5", [0, 1, 1, 0]), [0, 100, 100, 0])
    assert normalized_score("Hopper-v5", 10.0, reference=(0.0, 20.0)) == pytest.approx(50.0)
    # CartPole: uniform random actions (measured) and the episode cap
    assert normalized_score("CartPole-v1", 500.0) == pytest.approx(100.0)
    assert normalized_score("CartPole-v1", 22.197) == pytest.approx(0.0)
    with pytest.raises(KeyError, match="no reference"):
        normalized_score("Pendulum-v1", 1.0)


def test_reference_precedence_flags_then_dataset_then_table():
    table = (-20.272305, 3234.3)
    assert reference_of("Hopper-v5") == table
    assert reference_of("Hopper-v5", metadata={"ref_min_score": 1, "ref_max_score": 2}) == (1.0, 2.0)
    assert reference_of("Hopper-v5", (5, 6), {"ref_min_score": 1, "ref_max_score": 2}) == (5.0, 6.0)
    assert reference_of("Pendulum-v1") is None
    assert reference_of("Pendulum-v1", metadata={"ref_min_score": 0, "ref_max_score": 500}) == (0.0, 500.0)
    stats = return_stats("Pendulum-v1", [250.0, 500.0], reference=(0.0, 500.0))
    assert stats["normalized_mean"] == pytest.approx(75.0) and stats["normalized_std"] == pytest.approx(25.0)
    assert "normalized_mean" not in return_stats("Pendulum-v1", [1.0])


def test_reference_flags_go_together():
    with pytest.raises(ConfigError, match="go together"):
        Config(ref_min_score=1.0).validate()
    with pytest.raises(ConfigError, match="must be below"):
        Config(ref_min_score=2.0, ref_max_score=1.0).validate()
    assert Config(ref_min_score=0.0, ref_max_score=1.0).validate().reference() == (0.0, 1.0)
