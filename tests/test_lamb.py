"""odt's LAMB against the update written out tensor by tensor (the official code's formula), and
against torch's Adam where the official LAMB is Adam (no weight decay)."""
import copy
import math

import pytest
import torch

from odt.algos.lamb import Lamb


def _reference_step(params, grads, state, t, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    """One LAMB step, one tensor at a time, in float64."""
    b1, b2 = betas
    for i, (p, g) in enumerate(zip(params, grads)):
        m, v = state.setdefault(i, (torch.zeros_like(p), torch.zeros_like(p)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        state[i] = (m, v)
        u = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
        if wd:
            u = u + wd * p
            w_norm, u_norm = p.norm().item(), u.norm().item()
            u = u * (w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
        p -= lr * u


def _step(model, opt, x):
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))


@pytest.mark.parametrize("wd", [0.0, 5e-4, 0.1])
def test_lamb_matches_the_update_written_out(wd):
    model = _model()
    ref = [p.detach().double().clone() for p in model.parameters()]
    opt = Lamb(model.parameters(), lr=1e-2, weight_decay=wd, eps=1e-8)
    state = {}
    g = torch.Generator().manual_seed(1)
    for t in range(1, 21):
        x = torch.randn(16, 4, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        grads = [p.grad.double() for p in model.parameters()]
        opt.step()
        _reference_step(ref, grads, state, t, 1e-2, wd)
    for p, r in zip(model.parameters(), ref):
        torch.testing.assert_close(p.double(), r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("wd", [0.0, 5e-4])
def test_a_step_skipped_on_the_device_changes_nothing_and_the_rest_match_the_update_written_out(wd):
    """The learner always sets ``found_inf``: its flagged steps (NaN gradients) leave every
    tensor, moment and the count as they were; the others are the written-out update."""
    model = _model()
    ref = [p.detach().double().clone() for p in model.parameters()]
    opt = Lamb(model.parameters(), lr=1e-2, weight_decay=wd, eps=1e-8)
    state, t = {}, 0
    g = torch.Generator().manual_seed(1)
    for i in range(20):
        opt.zero_grad()
        model(torch.randn(16, 4, generator=g)).pow(2).mean().backward()
        skip = i in (3, 4, 11)
        if skip:
            next(model.parameters()).grad[0, 0] = float("nan")
        grads = [p.grad.double() for p in model.parameters()]
        opt.found_inf = torch.tensor(float(skip))
        opt.step()
        if not skip:
            t += 1
            _reference_step(ref, grads, state, t, 1e-2, wd)
    assert float(opt.param_groups[0]["step"]) == t == 17
    for p, r in zip(model.parameters(), ref):
        torch.testing.assert_close(p.double(), r, rtol=1e-4, atol=1e-6)
    for i, p in enumerate(model.parameters()):
        torch.testing.assert_close(opt.state[p]["exp_avg"].double(), state[i][0], rtol=1e-4, atol=1e-7)


def test_without_weight_decay_lamb_is_adam():
    a, b = _model(), _model()
    lamb = Lamb(a.parameters(), lr=1e-3, weight_decay=0.0, eps=1e-8)
    adam = torch.optim.Adam(b.parameters(), lr=1e-3, eps=1e-8)
    for step in range(10):
        x = torch.randn(8, 4)
        for m, opt in ((a, lamb), (b, adam)):
            _step(m, opt, x)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_trust_ratio_makes_each_tensor_move_lr_times_its_norm():
    # With weight decay, the first step moves every tensor by exactly lr * ||theta||, whatever
    # the gradient's size: LAMB's layer-wise adaptation, unclamped for large tensors.
    torch.manual_seed(0)
    big = torch.nn.Parameter(torch.randn(64, 64) * 3)  # norm ~192, far above any clamp
    small = torch.nn.Parameter(torch.randn(8) * 0.1)
    opt = Lamb([big, small], lr=1e-3, weight_decay=1e-4)
    before = [big.detach().clone(), small.detach().clone()]
    (big.sum() * 100 + small.sum() * 1e-3).backward()
    opt.step()
    for p, p0 in zip((big, small), before):
        assert (p.detach() - p0).norm().item() == pytest.approx(1e-3 * p0.norm().item(), rel=1e-4)


def test_state_round_trips_through_state_dict():
    a = _model()
    opt = Lamb(a.parameters(), lr=1e-3, weight_decay=1e-3)
    for _ in range(3):
        _step(a, opt, torch.randn(4, 4))
    b = copy.deepcopy(a)
    opt_b = Lamb(b.parameters(), lr=1e-3, weight_decay=1e-3)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))
    x = torch.randn(4, 4)
    for m, o in ((a, opt), (b, opt_b)):
        _step(m, o, x)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert opt.param_groups[0]["step"] == 4 and not math.isnan(float(next(a.parameters()).detach().sum()))
