import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from odt.config import Config, preset
from odt.data.buffer import ReplayBuffer, Sampling
from odt.data.formats import save_npz
from odt.data.generate import collect
from odt.data.trajectories import Episode
from odt.policy import load_policy
from odt.scaling import Scaling
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


def _assert_close(actual, expected, where: str, rel: float) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), f"{where}: keys differ"
        for k in expected:
            _assert_close(actual[k], expected[k], f"{where}.{k}", rel)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: lengths differ"
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_close(a, e, f"{where}[{i}]", rel)
    elif isinstance(expected, float) and not isinstance(actual, (bool, str)):
        # Relative to the row's scale as well as the value's: a standard deviation of nearly equal
        # returns carries the returns' rounding, not its own.
        assert math.isclose(actual, expected, rel_tol=rel, abs_tol=1e-6), f"{where}: {actual} != {expected}"
    else:  # integers, strings, booleans, None: exact
        assert actual == expected and type(actual) is type(expected), f"{where}: {actual!r} != {expected!r}"


def assert_metrics_match(actual: Path, expected: Path, rel: float = 1e-4) -> None:
    """metrics.jsonl written on another machine: the same rows, keys, integers and strings, and
    floats equal up to ``rel``. Matrix kernels round differently from one CPU kind to another (AMX,
    AVX512_BF16, AVX2), by about 1e-5 relative after some hundred updates; a change in what is
    computed moves these numbers by far more. What one machine computes twice is compared byte
    for byte instead."""
    rows = [json.loads(line) for line in Path(actual).read_text().splitlines()]
    want = [json.loads(line) for line in Path(expected).read_text().splitlines()]
    assert len(rows) == len(want), f"{len(rows)} rows, expected {len(want)}"
    for i, (a, e) in enumerate(zip(rows, want)):
        _assert_close(a, e, f"row {i + 1}", rel)


def assert_line_matches(actual: str, expected: str) -> None:
    """A printed line from another machine: the same words, and each number within one unit of its
    last printed digit, since a value on a rounding boundary prints either way."""
    got, want = actual.split(), expected.split()
    assert len(got) == len(want), f"{actual!r} != {expected!r}"
    for a, e in zip(got, want):
        try:
            x, y = float(a), float(e)
        except ValueError:
            assert a == e, f"{actual!r} != {expected!r}"
            continue
        unit = 10.0 ** -(len(e.split(".")[1]) if "." in e else 0)
        assert abs(x - y) <= unit * (1 + 1e-9), f"{actual!r} != {expected!r}"


def make_buffer(capacity: int, obs_dim: int = 3, act_dim: int = 2, *, obs_mean=None, obs_std=None, offline=(),
                **sampling) -> ReplayBuffer:
    """A replay buffer with the config's sampling settings, ``sampling`` overriding them (rtg_scale,
    keep_next, priority_alpha, hindsight, gamma, reward_shift)."""
    scaling = Scaling(np.zeros(obs_dim) if obs_mean is None else obs_mean, np.ones(obs_dim) if obs_std is None else obs_std,
                      -np.ones(act_dim), np.ones(act_dim))
    return ReplayBuffer(capacity, scaling, dataclasses.replace(Sampling.of(Config()), **sampling), offline)


def packed(buffer: ReplayBuffer) -> dict[str, np.ndarray]:
    """A buffer's packed steps, field by field, as numpy arrays (a scalar per step: a vector)."""
    steps = buffer._pack()["steps"].cpu().numpy()
    vectors = ("states", "actions", "next_states", "next_actions")
    return {name: steps[:, cols] if name in vectors else steps[:, cols.start] for name, cols in buffer.columns.items()}


def step(learner, batch) -> dict:
    """One update, its metrics read back at once (the loop reads once per round or log interval)."""
    learner.update(batch)
    return learner.read()
