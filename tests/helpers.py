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
        return trainer.policy(), load_policy(out, "pretrained")
    finally:
        trainer.close()


def wandb_records(run_file) -> list:
    """The protobuf records of an offline W&B run file (``run-ID.wandb``). wandb ships no reader of
    its own file, so this follows its format: a 7-byte header, then LevelDB-log blocks of 32 KiB
    whose chunks (crc32, length, type: 1 whole, 2 first, 3 middle, 4 last) carry the records."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, records, buf = open(run_file, "rb").read(), 7, 32768, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            break
        buf, pos = buf + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records
