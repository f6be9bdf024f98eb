import numpy as np
import pytest

from odt.data.buffer import ReplayBuffer

from helpers import make_episode


def _buf(cap):
    return ReplayBuffer(cap, np.zeros(3, np.float32), np.ones(3, np.float32), rtg_scale=1.0)


def test_trajectory_frequencies_proportional_to_length():
    lengths = [5, 10, 20, 65]
    buf = _buf(10)
    for i, T in enumerate(lengths):
        ep = make_episode(T, seed=i)
        ep.observations[:, 0] = i  # tag each trajectory in its first state feature
        buf.add(ep)
    n = 40_000
    b = buf.sample(n, K=4, rng=np.random.default_rng(0))
    counts = np.bincount(b.states[:, 0, 0].numpy().astype(int), minlength=4)
    p = np.array(lengths) / sum(lengths)
    np.testing.assert_allclose(buf.sampling_probabilities(), p)
    # Each count is binomial(n, p): all within 5 standard deviations.
    assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p))), counts
    # Starts are uniform within a trajectory (the longest one, 65 starts).
    starts = b.timesteps[:, 0].numpy()[b.states[:, 0, 0].numpy() == 3]
    hist = np.bincount(starts, minlength=65)
    exp = len(starts) / 65
    assert hist.min() > exp - 5 * np.sqrt(exp) and hist.max() < exp + 5 * np.sqrt(exp)


def test_windows_are_the_trajectory_slices_right_padded():
    ep = make_episode(7, seed=1)
    buf = _buf(5)
    buf.add(ep)
    b = buf.sample(200, K=4, rng=np.random.default_rng(1))
    for i in range(200):
        t0 = int(b.timesteps[i, 0])
        n = min(4, 7 - t0)
        assert b.mask[i].tolist() == [1.0] * n + [0.0] * (4 - n)
        np.testing.assert_allclose(b.actions[i, :n].numpy(), ep.actions[t0:t0 + n])
        np.testing.assert_allclose(b.states[i, :n].numpy(), ep.observations[t0:t0 + n])
        assert b.timesteps[i, :n].tolist() == list(range(t0, t0 + n))
        assert (b.actions[i, n:] == 0).all() and (b.states[i, n:] == 0).all()


def test_states_are_normalised():
    ep = make_episode(4, seed=2)
    mean, std = np.array([1.0, 2.0, 3.0], np.float32), np.array([2.0, 4.0, 0.5], np.float32)
    buf = ReplayBuffer(2, mean, std, 1.0)
    buf.add(ep)
    b = buf.sample(8, K=4, rng=np.random.default_rng(0))
    t0 = int(b.timesteps[0, 0])
    np.testing.assert_allclose(b.states[0, 0].numpy(), (ep.observations[t0] - mean) / std, rtol=1e-6)


def test_seeding_takes_top_n_and_drops_none_when_fewer():
    eps = [make_episode(3, reward=r, seed=i) for i, r in enumerate([5.0, 1.0, 9.0, 3.0, 7.0])]
    buf = _buf(3)
    buf.fill(eps, 3)
    assert sorted(e.ret for e in buf.episodes) == [15.0, 21.0, 27.0]  # top 3 by return
    all_in = _buf(10)
    all_in.fill(eps, 10)
    assert len(all_in) == 5  # fewer than N: every one is kept, the worst included


def test_eviction_offline_lowest_return_first_then_fifo():
    eps = [make_episode(2, reward=r, seed=i) for i, r in enumerate([5.0, 1.0, 9.0])]
    buf = _buf(3)
    buf.fill(eps)
    online = [make_episode(2, reward=100.0 + i, seed=10 + i) for i in range(4)]
    for ep in online:
        ep.online = True
    evicted = [buf.add(ep) for ep in online]
    rets = [[e.ret for e in ev] for ev in evicted]
    assert rets == [[2.0], [10.0], [18.0], [200.0]]  # offline by return, then the oldest online
    assert [e.ret for e in buf.episodes] == [202.0, 204.0, 206.0]


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        _buf(0)
