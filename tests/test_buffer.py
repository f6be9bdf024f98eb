import dataclasses

import numpy as np
import pytest
import torch
from helpers import const_episodes, make_buffer, make_episode, packed

from odt.data.buffer import Batch
from odt.data.trajectories import Episode


def _buf(cap):
    return make_buffer(cap, obs_dim=3, rtg_scale=1.0)


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


def test_states_are_normalized():
    ep = make_episode(4, seed=2)
    mean, std = np.array([1.0, 2.0, 3.0], np.float32), np.array([2.0, 4.0, 0.5], np.float32)
    buf = make_buffer(2, obs_mean=mean, obs_std=std, rtg_scale=1.0)
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


# --- the toolbox's replay: prioritized sampling, hindsight ablation, random seeding ---------
def test_prioritized_probabilities_and_empirical_frequencies():
    eps = const_episodes([0.0, 1.0, 2.0], [10, 10, 10])  # returns 0, 10, 20
    buf = make_buffer(10, obs_dim=3, rtg_scale=1.0, priority_alpha=1.0)
    buf.fill(eps)
    priority = np.array([0.2, 10.2, 20.2])  # return - lowest + 1% of the range
    order = np.argsort([e.ret for e in buf.episodes])
    np.testing.assert_allclose(buf.sampling_probabilities()[order], priority / priority.sum())
    buf.sampling = dataclasses.replace(buf.sampling, priority_alpha=2.0)
    np.testing.assert_allclose(buf.sampling_probabilities()[order], priority ** 2 / (priority ** 2).sum())
    buf.sampling = dataclasses.replace(buf.sampling, priority_alpha=1.0)
    b = buf.sample(30_000, 3, np.random.default_rng(0))
    freq = np.array([(b.rewards[:, 0] == r).float().mean().item() for r in (0.0, 1.0, 2.0)])
    np.testing.assert_allclose(freq, priority / priority.sum(), atol=0.01)


def test_length_proportional_sampling_unchanged_by_default():
    eps = const_episodes([1.0, 2.0], [10, 30])
    buf = make_buffer(10, obs_dim=3, rtg_scale=1.0)
    buf.fill(eps)
    b = buf.sample(20_000, 1, np.random.default_rng(0))
    assert (b.rewards[:, 0] == 2.0).float().mean().item() == pytest.approx(0.75, abs=0.01)


def test_hindsight_off_keeps_the_conditioning_target():
    online = Episode(np.zeros((3, 3), np.float32), np.zeros((3, 2), np.float32), np.array([1, 2, 3], np.float32),
                     truncated=True, online=True, target=10.0)
    offline = make_episode(4, reward=1.0)
    for hindsight, expected in ((True, [6, 5, 3]), (False, [10, 9, 7])):
        buf = make_buffer(10, obs_dim=3, rtg_scale=1.0, hindsight=hindsight, keep_next=True)
        buf.add(online)
        buf.add(offline)
        p = packed(buf)
        np.testing.assert_allclose(p["rtg"][:3], expected)
        np.testing.assert_allclose(p["rtg"][3:], [4, 3, 2, 1])  # offline: no target, true returns-to-go
        np.testing.assert_allclose(p["next_rtg"][:3], expected[1:] + [expected[-1] - 3])


def test_random_seeding_takes_n_at_random():
    eps = const_episodes(np.arange(20, dtype=float), [5] * 20)
    top = make_buffer(5, obs_dim=3, rtg_scale=1.0)
    top.fill(eps)
    assert sorted(e.ret for e in top.episodes) == [75, 80, 85, 90, 95]
    rnd = make_buffer(5, obs_dim=3, rtg_scale=1.0)
    rnd.fill(eps, rng=np.random.default_rng(3))
    chosen = np.random.default_rng(3).choice(20, size=5, replace=False)
    assert sorted(e.ret for e in rnd.episodes) == sorted(eps[i].ret for i in chosen)


def test_windows_of_two_draws_stack_into_one_batch():
    buf = make_buffer(10, obs_dim=3, rtg_scale=1.0, keep_next=True)
    buf.fill(const_episodes([1.0, 2.0], [10, 10]))
    rng = np.random.default_rng(0)
    (w1, m1, f1), (w2, m2, f2) = buf.draw(3, 4, rng), buf.draw(5, 4, rng)
    assert f1 is None and f2 is None  # flat observations travel in the windows
    b = Batch.of(torch.cat([w1, w2]), torch.cat([m1, m2]), buf.columns)
    assert b.states.shape == (8, 4, 3) and b.rtg.shape == (8, 4, 1) and b.critic_mask.shape == (8, 4)
    assert b.timesteps.dtype == torch.long and b.mask.dtype == torch.float32
