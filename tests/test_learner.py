import copy
import dataclasses

import numpy as np
import pytest
import torch
from helpers import const_episodes, make_buffer, make_episode, step

from odt.algos.learner import Learner
from odt.config import OptimSettings
from odt.checkpoint import load_checkpoint, networks_state, save_checkpoint
from odt.config import Config
from odt.models.transformer import DecisionTransformer, ModelSpec
from odt.scaling import Scaling


def _setup(head="tanh_gaussian", algo="odt", lr=1e-4, **kw):
    spec = ModelSpec(obs_dim=3, act_dim=2, embed_dim=32, n_layer=2, n_head=2, dropout=0.0, context_len=5,
                     action_head=head, **kw)
    model = DecisionTransformer(spec)
    learner = Learner(model, algo, OptimSettings(lr=lr, weight_decay=1e-4, warmup_steps=1, grad_clip=0.25,
                                                 lambda_lr=1e-2))
    buf = make_buffer(10, obs_dim=3, rtg_scale=10.0)
    for i in range(4):
        buf.add(make_episode(12, seed=i))
    return learner, buf.sample(16, 5, np.random.default_rng(0))


def _eval_loss(learner, batch):
    with torch.no_grad():
        pred = learner.model(batch.rtg, batch.states, batch.actions, batch.timesteps)
        torch.manual_seed(0)
        loss, _, _ = learner.loss_fn(pred, batch, learner.temperature.value, 64)
    return loss.item()


@pytest.mark.parametrize("head,algo", [("tanh_gaussian", "odt"), ("gaussian", "odt"), ("deterministic", "dt")])
def test_one_step_lowers_loss_on_fixed_batch(head, algo):
    learner, batch = _setup(head, algo)
    before = _eval_loss(learner, batch)
    learner.update(batch)
    assert _eval_loss(learner, batch) < before


def test_lambda_moves_toward_target_entropy():
    # Entropy of a fresh policy is far above beta = -dim(A) = -2 here: lambda must fall.
    learner, batch = _setup("gaussian")
    lam0 = learner.temperature.lam
    for _ in range(5):
        m = step(learner, batch)
    assert m["entropy"] > learner.temperature.target_entropy and learner.temperature.lam < lam0
    # With a target above the entropy, lambda rises.
    learner2, batch2 = _setup("gaussian")
    learner2.temperature.target_entropy = 100.0
    lam0 = learner2.temperature.lam
    for _ in range(5):
        learner2.update(batch2)
    assert learner2.temperature.lam > lam0


def test_warmup_is_linear():
    spec = ModelSpec(obs_dim=3, act_dim=2, embed_dim=16, n_layer=1, n_head=1, dropout=0.0)
    learner = Learner(DecisionTransformer(spec), "odt",
                      OptimSettings(lr=1e-3, weight_decay=0.0, warmup_steps=10, grad_clip=0.25))
    _, batch = _setup()
    lrs = [step(learner, batch)["lr"] for _ in range(12)]
    np.testing.assert_allclose(lrs[:9], [1e-3 * (i + 2) / 10 for i in range(9)])
    assert lrs[-1] == pytest.approx(1e-3)


def test_save_load_round_trips_everything_exactly(tmp_path):
    learner, batch = _setup()
    for _ in range(3):
        learner.update(batch)
    learner.read()  # the loop reads every interval: a checkpoint follows a read
    scaling = Scaling(obs_mean=np.zeros(3), obs_std=np.ones(3), act_low=-np.ones(2), act_high=np.ones(2))
    save_checkpoint(tmp_path / "c.pt", networks_state(dataclasses.asdict(learner.model.spec), scaling.state_dict(),
                                                      [learner.state_dict()]))
    state = load_checkpoint(tmp_path / "c.pt")
    other, _ = _setup()
    other.load_state_dict(state["ensemble"]["learners"][0])
    assert other.temperature.lam == learner.temperature.lam and other.updates == 3
    for (k, a), (_, b) in zip(learner.model.state_dict().items(), other.model.state_dict().items()):
        assert torch.equal(a, b), k
    sa, sb = learner.optimizer.state_dict(), other.optimizer.state_dict()
    for pid in sa["state"]:
        for k, v in sa["state"][pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(sb["state"][pid][k]))
    assert learner.scheduler.state_dict() == other.scheduler.state_dict()
    assert str(learner.temperature.optimizer.state_dict()) == str(other.temperature.optimizer.state_dict())
    # Continuing from the copy gives exactly what continuing the original gives.
    torch.manual_seed(5)
    m1 = step(learner, batch)
    torch.manual_seed(5)
    m2 = step(other, batch)
    assert m1 == m2


def test_bf16_autocast_learns_like_fp32():
    """bf16 changes rounding only: the loss curve on a fixed batch stays within a few percent."""
    curves = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        learner, batch = _setup("tanh_gaussian")
        learner.precision = prec
        curves[prec] = [step(learner, batch)["nll"] for _ in range(20)]
    assert curves["bf16"][-1] < curves["bf16"][0]
    np.testing.assert_allclose(curves["bf16"], curves["fp32"], rtol=0.05, atol=0.05)


def _params(learner):
    return [p.detach().clone() for p in learner.model.parameters()]


def test_non_finite_updates_are_skipped_then_rolled_back():
    """The device skips a non-finite update; the interval's read takes it back from the counters,
    and, after max_bad in a row, returns to the snapshot taken at the last clean interval's end."""
    learner, batch = _setup("deterministic", "dt")
    learner.guard.max_bad, learner.guard.snapshot_every = 3, 2
    for _ in range(2):
        step(learner, batch)
    good = _params(learner)  # the snapshot at update 2, a clean interval's end
    step(learner, batch)
    after3 = _params(learner)
    bad = dataclasses.replace(batch, actions=batch.actions.clone())
    bad.actions[0, 0, 0] = float("nan")
    for i in range(2):  # skipped: nothing changes
        learner.update(bad)
        assert all(torch.equal(a, b) for a, b in zip(after3, learner.model.parameters()))
    m = learner.read()
    assert m == {"skipped": 2.0} and learner.updates == 3 and learner.scheduler.last_epoch == 3
    assert learner.guard.events == [{"event": "skipped_update", "part": "actor", "reason": "non-finite loss",
                                     "count": 2, "in_a_row": 2}]
    learner.update(bad)  # the third in a row: back to the last snapshot, optimizer state included
    learner.update(bad)
    m = learner.read()
    assert m == {"skipped": 2.0, "rollback": 1.0} and learner.updates == 2
    assert all(torch.equal(a, b) for a, b in zip(good, learner.model.parameters()))
    assert learner.guard.events[-1] == {"event": "rollback", "reason": "4 non-finite updates in a row", "to_updates": 2}
    assert learner.scheduler.last_epoch == 2  # the schedule came back with it
    m = step(learner, batch)  # and learning goes on
    assert learner.updates == 3 and "skipped" not in m and np.isfinite(m["loss"])


def test_a_skip_in_an_interval_leaves_the_good_updates_counted_and_averaged():
    learner, batch = _setup("deterministic", "dt")
    bad = dataclasses.replace(batch, actions=batch.actions.clone())
    bad.actions[0, 0, 0] = float("nan")
    for b in (batch, bad, batch):
        learner.update(b)
    m = learner.read()
    assert learner.updates == 2 and m["skipped"] == 1.0 and np.isfinite(m["loss"]) and np.isfinite(m["mse"])


def test_non_finite_lambda_is_restored(monkeypatch):
    learner, batch = _setup()
    lam = learner.temperature.lam
    monkeypatch.setattr("odt.algos.temperature.temperature_loss", lambda log_lambda, h, beta: log_lambda.exp() * float("inf"))
    m = step(learner, batch)
    assert m == {"skipped": 1.0} and learner.temperature.lam == lam
    assert learner.guard.events[-1]["reason"] == "non-finite lambda" and learner.updates == 1  # the policy step was taken


def test_skips_and_rollbacks_reach_metrics_and_the_log(tmp_path, monkeypatch):
    import json

    from odt.algos import losses
    from odt.cli import main

    calls = {"n": 0}
    real = losses.dt_loss

    def flaky(pred, batch, lam=None, entropy_samples=1):
        calls["n"] += 1
        loss, h, m = real(pred, batch, lam, entropy_samples)
        return (loss * float("nan") if 5 < calls["n"] <= 9 else loss), h, m

    monkeypatch.setitem(losses.LOSSES, "dt", flaky)
    out = tmp_path / "run"
    assert main(["pretrain", "--preset", "reward-hill", "--algo", "dt", "--pretrain-updates", "12",
                 "--max-bad-updates", "4", "--out", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = [r for r in rows if r.get("event") in ("skipped_update", "rollback")]
    # 12 updates are logged one by one: each interval's read counts its skip, the fourth in a row rolls back.
    assert [(e["event"], e.get("count"), e.get("in_a_row")) for e in events] == [
        ("skipped_update", 1, 1), ("skipped_update", 1, 2), ("skipped_update", 1, 3), ("skipped_update", 1, 4),
        ("rollback", None, None)]
    assert [r["skipped"] for r in rows if "skipped" in r] == [1.0] * 4
    log = (out / "run.log").read_text()
    assert "warning: 1 skipped update (non-finite loss)" in log and "warning: rollback" in log


# --- the toolbox's learner: forgetting penalty, rollback to an earlier state -----------------
def _learner(**kw):
    torch.manual_seed(0)
    spec = Config(embed_dim=16, n_layer=1, n_head=1, context_len=4, dropout=0.0).model_spec(3, 2)
    return Learner(DecisionTransformer(spec), "odt",
                   OptimSettings(lr=1e-3, weight_decay=0.0, warmup_steps=1, grad_clip=1.0, **kw))


def test_reg_loss_equals_the_tutorials_formula_and_enters_the_loss():
    learner = _learner()
    learner.set_anchor(2.0)
    anchor = [p.detach().clone() for p in learner.model.parameters()]
    buf = make_buffer(10, obs_dim=3, rtg_scale=1000.0)
    buf.fill(const_episodes([1.0, 2.0], [10, 10]))
    for _ in range(3):
        m = step(learner, buf.sample(8, 4, np.random.default_rng(0)))
    expected = sum(float(((p.detach() - a) ** 2).mean()) for p, a in zip(learner.model.parameters(), anchor))
    assert float(learner.reg_loss().detach()) == pytest.approx(expected, rel=1e-6)
    assert m["reg_loss"] > 0
    # without an anchor there is no penalty
    assert "reg_loss" not in step(_learner(), buf.sample(8, 4, np.random.default_rng(0)))


def test_lr_scale_and_restore_weights_keep_counters_forward():
    learner = _learner()
    buf = make_buffer(10, obs_dim=3, rtg_scale=1000.0)
    buf.fill(const_episodes([1.0, 2.0], [10, 10]))
    step(learner, buf.sample(8, 4, np.random.default_rng(0)))
    saved = {k: v for k, v in learner.state_dict().items()}
    saved = copy.deepcopy(saved)
    learner.set_lr_scale(0.1)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    m = step(learner, buf.sample(8, 4, np.random.default_rng(1)))
    assert m["lr"] == pytest.approx(1e-4)
    learner.restore_weights(saved)
    for k, v in learner.model.state_dict().items():
        assert torch.equal(v, saved["model"][k])
    assert learner.updates == 2 and learner.lr_scale == pytest.approx(0.1)


def test_a_loaded_learner_rolls_back_to_what_it_loaded():
    """After a resume (or --init) the guard's last good state is the loaded one, never the fresh
    weights the learner was built with."""
    learner, batch = _setup("deterministic", "dt")
    for _ in range(3):
        step(learner, batch)
    state = copy.deepcopy(learner.state_dict())
    other, _ = _setup("deterministic", "dt")
    other.load_state_dict(state)
    other.guard.max_bad = 2
    bad = dataclasses.replace(batch, actions=batch.actions.clone())
    bad.actions[0, 0, 0] = float("nan")
    other.update(bad)
    other.update(bad)
    assert other.read()["rollback"] == 1.0 and other.updates == 3
    assert all(torch.equal(a, b) for a, b in zip(learner.model.parameters(), other.model.parameters()))
