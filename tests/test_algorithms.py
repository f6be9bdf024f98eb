"""Every algorithm, and an ensemble, through pretrain, save, load and act on tiny data: the loaded
policy acts exactly as the trained one did."""
import numpy as np
import pytest
from helpers import roundtrip


@pytest.mark.parametrize("algo, settings", [("dt", {}), ("odt", {}), ("vidt", {}), ("odt-td3", {}),
                                             ("odt", {"ensemble": 2})])
def test_pretrain_save_load_act(tmp_path, algo, settings):
    live, loaded = roundtrip(tmp_path / "run", algo, **settings)
    targets = np.array([0.0, 0.5, 1.0], np.float32)
    obs = np.zeros((3, 1), np.float32)
    for policy in (live, loaded):
        policy.reset(targets, n=3)
    first = live.act(obs)
    np.testing.assert_array_equal(first, loaded.act(obs))
    assert first.shape == (3, 1) and np.all(np.abs(first) <= 1)
    rewards = np.array([0.1, 0.2, 0.3], np.float32)  # a second step: the reward enters the context
    np.testing.assert_array_equal(live.act(obs, rewards), loaded.act(obs, rewards))
