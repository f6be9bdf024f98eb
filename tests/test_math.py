"""The math against values computed by hand or by an independent formula."""
import math

import numpy as np
import pytest
import torch
from helpers import make_buffer, make_episode

from odt.algos.losses import dt_loss, masked_mean, odt_loss, temperature_loss
from odt.data.buffer import Batch
from odt.data.trajectories import returns_to_go, split_episodes
from odt.models.heads import ActionDist, gaussian_entropy


def test_returns_to_go_by_hand():
    assert returns_to_go(np.array([1.0, 2.0, 3.0, 4.0])).tolist() == [10.0, 9.0, 7.0, 4.0]
    assert returns_to_go(np.array([5.0])).tolist() == [5.0]
    assert returns_to_go(np.array([-1.0, 0.5])).tolist() == [-0.5, 0.5]


def test_hindsight_relabeling_uses_achieved_rewards():
    """Whatever target a rollout was conditioned on, the buffer's RTGs are the achieved ones, and
    the last RTG of a trajectory equals its last reward (Algorithm 2, line 6)."""
    ep = make_episode(5, reward=None, seed=3)
    ep.online = True
    buf = make_buffer(10, obs_dim=3, rtg_scale=10.0)
    buf.add(ep)
    b = buf.sample(64, K=5, rng=np.random.default_rng(0))
    r = ep.rewards.astype(np.float64)
    for i in range(64):
        t0 = int(b.timesteps[i, 0])
        n = int(b.mask[i].sum())
        expect = [r[t:].sum() / 10.0 for t in range(t0, t0 + n)]
        np.testing.assert_allclose(b.rtg[i, :n, 0].numpy(), expect, rtol=1e-5)
        if t0 + n == 5:
            assert float(b.rtg[i, n - 1, 0]) == pytest.approx(r[-1] / 10.0)


def test_gaussian_entropy_analytic():
    log_std = torch.tensor([[[0.0, math.log(2.0)]]])
    expected = 0.5 * math.log(2 * math.pi * math.e) * 2 + math.log(2.0)
    assert gaussian_entropy(log_std).item() == pytest.approx(expected, rel=1e-6)


def _normal_logpdf(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def test_log_prob_matches_independent_formula():
    mu, log_std = torch.tensor([[0.3, -0.2]]), torch.tensor([[-0.5, 0.1]])
    a = torch.tensor([[0.1, 0.4]])
    g = ActionDist(mu, log_std, squashed=False).log_prob(a).item()
    exp = sum(_normal_logpdf(a[0, i].item(), mu[0, i].item(), math.exp(log_std[0, i].item())) for i in range(2))
    assert g == pytest.approx(exp, rel=1e-6)
    # Squashed: change of variables a = tanh(u), log p(a) = log N(u) - log(1 - a^2).
    s = ActionDist(mu, log_std, squashed=True).log_prob(a).item()
    exp_s = sum(_normal_logpdf(math.atanh(a[0, i].item()), mu[0, i].item(), math.exp(log_std[0, i].item()))
                - math.log(1 - a[0, i].item() ** 2) for i in range(2))
    assert s == pytest.approx(exp_s, rel=1e-5)


def test_monte_carlo_entropy_matches_analytic_gaussian():
    mu, log_std = torch.zeros(1, 3), torch.tensor([[-1.0, 0.0, 0.5]])
    d = ActionDist(mu, log_std, squashed=False)
    analytic = gaussian_entropy(log_std).item()
    _, logp = d.rsample(200_000)
    assert (-logp.mean()).item() == pytest.approx(analytic, abs=0.02)


def test_monte_carlo_entropy_of_squashed_gaussian_matches_quadrature():
    """H[tanh(U)] = H[U] + E[log(1 - tanh(U)^2)], computed by numerical integration in 1-D."""
    mu, sigma = 0.4, 0.8
    u = np.linspace(mu - 10 * sigma, mu + 10 * sigma, 200_001)
    pdf = np.exp(-0.5 * ((u - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    jac = np.log(1 - np.tanh(u) ** 2)
    expected = 0.5 * math.log(2 * math.pi * math.e * sigma ** 2) + np.trapezoid(pdf * jac, u)
    d = ActionDist(torch.tensor([[mu]]), torch.tensor([[math.log(sigma)]]), squashed=True)
    assert d.entropy(samples=200_000).item() == pytest.approx(expected, abs=0.01)
    few = ActionDist(torch.full((1, 1000, 1), mu), torch.full((1, 1000, 1), math.log(sigma)), squashed=True)
    assert few.entropy(samples=4).shape == (1, 1000)


def _batch(actions, mask):
    B, T, A = actions.shape
    return Batch(states=torch.zeros(B, T, 1), actions=actions, rtg=torch.zeros(B, T, 1),
                 timesteps=torch.zeros(B, T, dtype=torch.long), mask=mask, rewards=torch.zeros(B, T))


def test_dt_mse_is_masked_by_hand():
    actions = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [9.0, 9.0]]])
    pred = torch.tensor([[[0.0, 0.0], [0.5, -0.5], [0.0, 0.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, _, _ = dt_loss(pred, _batch(actions, mask))
    # position 0: (1 + 0)/2 = 0.5; position 1: (0 + 1)/2 = 0.5; position 2 padded
    assert loss.item() == pytest.approx(0.5)


def test_odt_nll_and_entropy_are_masked():
    torch.manual_seed(0)
    mu, log_std = torch.randn(2, 4, 3) * 0.3, torch.randn(2, 4, 3) * 0.2 - 0.5
    actions = torch.rand(2, 4, 3) * 1.6 - 0.8
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    lam = torch.tensor(0.3)
    d = ActionDist(mu, log_std, squashed=False)
    loss, entropy, m = odt_loss(d, _batch(actions, mask), lam)
    valid = [(0, 0), (0, 1), (0, 2), (1, 0)]
    nll = -np.mean([sum(_normal_logpdf(actions[b, t, i].item(), mu[b, t, i].item(), math.exp(log_std[b, t, i].item()))
                        for i in range(3)) for b, t in valid])
    ent = np.mean([sum(0.5 * math.log(2 * math.pi * math.e) + log_std[b, t, i].item() for i in range(3))
                   for b, t in valid])
    assert m["nll"].item() == pytest.approx(nll, rel=1e-5)
    assert entropy.item() == pytest.approx(ent, rel=1e-5)
    assert loss.item() == pytest.approx(nll - 0.3 * ent, rel=1e-5)
    # Garbage at padded positions changes nothing.
    mu2, ls2, a2 = mu.clone(), log_std.clone(), actions.clone()
    mu2[mask == 0] = 50.0
    ls2[mask == 0] = 3.0
    a2[mask == 0] = -0.99
    loss2, ent2, _ = odt_loss(ActionDist(mu2, ls2, squashed=False), _batch(a2, mask), lam)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6) and ent2.item() == pytest.approx(entropy.item())


def test_squashed_entropy_ignores_padding():
    mask = torch.tensor([[1.0, 0.0]])
    mu, ls = torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
    ls[0, 1] = 2.0  # a padded position with a very different entropy
    torch.manual_seed(1)
    _, e1, _ = odt_loss(ActionDist(mu, ls, True), _batch(torch.zeros(1, 2, 2), mask), torch.tensor(0.1), 4000)
    torch.manual_seed(1)
    _, e2, _ = odt_loss(ActionDist(mu[:, :1], ls[:, :1], True), _batch(torch.zeros(1, 1, 2), mask[:, :1]),
                        torch.tensor(0.1), 4000)
    assert e1.item() == pytest.approx(e2.item(), abs=0.05)


def test_temperature_loss_gradient_sign():
    """d/d(log lambda) of lambda (H - beta) = lambda (H - beta): lambda falls when H is above beta."""
    log_lam = torch.tensor(math.log(0.5), requires_grad=True)
    temperature_loss(log_lam, torch.tensor(-1.0), target_entropy=-3.0).backward()
    assert log_lam.grad.item() == pytest.approx(0.5 * 2.0)


def test_masked_mean_by_hand():
    x = torch.tensor([[1.0, 2.0, 100.0]])
    assert masked_mean(x, torch.tensor([[1.0, 1.0, 0.0]])).item() == pytest.approx(1.5)


def test_split_episodes_keeps_trailing_partial_and_flags():
    rew = np.arange(7, dtype=np.float32)
    term = np.array([0, 0, 1, 0, 0, 0, 0], bool)
    tout = np.array([0, 0, 0, 0, 1, 0, 0], bool)
    eps = split_episodes(np.zeros((7, 2)), np.zeros((7, 1)), rew, term, tout)
    assert [len(e) for e in eps] == [3, 2, 2]
    assert [(e.terminated, e.truncated) for e in eps] == [(True, False), (False, True), (False, True)]


def test_summary_prints_standard_errors_and_the_change_with_its_error():
    from odt.evaluation import summary_table

    def phase(mean, std, n, updates, steps):
        return {"return_mean": 30 * mean, "return_std": 30 * std, "normalized_mean": mean, "normalized_std": std,
                "episodes": n, "updates": updates, "online_steps": steps}

    text = summary_table({"offline": phase(60.0, 8.0, 16, 1500, 0), "final": phase(75.0, 6.0, 9, 3000, 60000)})
    rows = {line.split()[0]: line for line in text.splitlines() if line.split()}
    assert "60.0 +- 2.0" in rows["offline"] and "75.0 +- 2.0" in rows["final"]  # 8/sqrt(16), 6/sqrt(9)
    assert "+15.0 +- 2.8" in rows["change"]  # sqrt(2^2 + 2^2) = 2.83
