import numpy as np
import pytest

from odt.config import preset
from odt.data.formats import save_npz
from odt.data.generate import collect
from odt.data.trajectories import Episode
from odt.policy import load_policy
from odt.setup import setup


def make_episode(T: int, obs_dim: int = 3, act_dim: int = 2, reward: float | None = None, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    rewards = np.full(T, reward, np.float32) if reward is not None else rng.uniform(0, 1, T).astype(np.float32)
    return Episode(rng.normal(size=(T, obs_dim)).astype(np.float32),
                   rng.uniform(-1, 1, (T, act_dim)).astype(np.float32), rewards, truncated=True)


def const_episodes(returns_per_step, lengths) -> list[Episode]:
    """Episodes of constant reward per step, one per (reward, length)."""
    return [make_episode(T, reward=r, seed=i) for i, (r, T) in enumerate(zip(returns_per_step, lengths))]


@pytest.fixture(scope="session")
def hopper_npz(tmp_path_factory):
    """A small real Hopper-v5 dataset (uniform random actions), written in odt's .npz format."""
    path = tmp_path_factory.mktemp("data") / "hopper-random-small.npz"
    save_npz(collect("Hopper-v5", 3000, seed=0, policy=None, name="test", log=lambda line: None), path)
    return path


def roundtrip(out, algo: str, **settings):
    """Pretrain ``algo`` for a few updates on the embedded reward-hill data, save, and load the
    checkpoint back: the trainer's own deterministic policy and the loaded one, to compare."""
    cfg = preset("reward-hill")
    cfg.algo, cfg.out, cfg.progress, cfg.pretrain_updates, cfg.eval_episodes = algo, out, False, 4, 2
    for name, value in settings.items():
        setattr(cfg, name, value)
    trainer = setup(cfg, "pretrain")
    try:
        trainer.pretrain()  # saves checkpoints/pretrained.pt
        return trainer.policy(deterministic=True), load_policy(out, "pretrained")
    finally:
        trainer.close()
