import numpy as np
import pytest

from odt.data.trajectories import Episode


def make_episode(T: int, obs_dim: int = 3, act_dim: int = 2, reward: float | None = None, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    rewards = np.full(T, reward, np.float32) if reward is not None else rng.uniform(0, 1, T).astype(np.float32)
    return Episode(rng.normal(size=(T, obs_dim)).astype(np.float32),
                   rng.uniform(-1, 1, (T, act_dim)).astype(np.float32), rewards, truncated=True)


@pytest.fixture(scope="session")
def hopper_npz(tmp_path_factory):
    """A small real Hopper-v5 dataset (uniform random actions), written in odt's .npz format."""
    from odt.data.generate import collect
    from odt.data.formats import save_npz

    path = tmp_path_factory.mktemp("data") / "hopper-random-small.npz"
    save_npz(collect("Hopper-v5", 3000, seed=0, policy=None, name="test", log=lambda line: None), path)
    return path
