"""The practical toolbox (issue 5): schedules against hand-computed values, and for each switch a
short run whose metrics.jsonl shows it acting."""
import json
import math

import numpy as np
import pytest
import torch

from helpers import make_episode
from odt.cli import main, parse_config
from odt.config import Config, preset
from odt.data.buffer import Batch, ReplayBuffer
from odt.data.trajectories import Episode
from odt.schedules import ReturnTarget, decay, linear, noise_std, parse_range


# --- schedules -------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, values", [
    ("constant", [1, 1, 1, 1]),
    ("linear", [1, 0.75, 0.5, 0]),
    ("sqrt", [1, math.sqrt(0.75), math.sqrt(0.5), 0]),
    ("exponential", [1, math.exp(-1.25), math.exp(-2.5), math.exp(-5)]),
    ("cosine", [1, (1 + math.cos(math.pi / 4)) / 2, 0.5, 0]),
])
def test_decay_schedules_match_hand_computed_values(kind, values):
    assert [decay(kind, p) for p in (0, 0.25, 0.5, 1)] == pytest.approx(values, abs=1e-12)


def test_noise_has_a_floor_and_progress_is_clipped():
    assert noise_std(0.3, "linear", 0.5) == pytest.approx(0.15)
    assert noise_std(0.3, "linear", 0.9, floor=0.05) == pytest.approx(0.05)
    assert noise_std(0.3, "linear", 2.0) == 0.0
    assert linear(0.5, 0.1, 0.25) == pytest.approx(0.4)


def test_parse_range():
    assert parse_range("0.5:0.1", "offline-ratio") == (0.5, 0.1)
    assert parse_range("0.3", "offline-ratio") == (0.3, 0.3)
    for bad in ("a", "0.1:0.2:0.3", ""):
        with pytest.raises(ValueError, match="START or START:END"):
            parse_range(bad, "offline-ratio")


def test_return_target_strategies_match_hand_computed_values():
    t = ReturnTarget("percentile", 99.0, p0=50, p1=100)
    assert t.value(0.3) == 99.0  # nothing observed yet: the fixed target
    t.observe(np.arange(1, 11))
    assert t.value(0.5) == pytest.approx(7.75)  # 75th percentile of 1..10: 7 + 0.75 * (8 - 7)
    assert t.value(0.0) == pytest.approx(5.5)

    u = ReturnTarget("ucb", 0.0, beta0=2.0, beta1=0.0)
    u.observe([2, 4, 4, 4, 5, 5, 7, 9])  # mean 5, population std 2
    assert u.value(0.0) == pytest.approx(9.0)
    assert u.value(0.5) == pytest.approx(7.0)
    assert u.value(1.0) == pytest.approx(5.0)

    c = ReturnTarget("curriculum", 0.0)
    c.observe([10, 30, 20])
    assert c.value(0.25) == pytest.approx(15.0)

    w = ReturnTarget("curriculum", 0.0, window=2)  # only the last two returns count
    w.observe([100, 10, 30])
    assert w.value(1.0) == pytest.approx(30.0) and w.highest == 100


def test_return_target_clipping():
    t = ReturnTarget("fixed", 100.0, clip=True, clip_c=1.2)
    t.observe([10, 50])
    assert t.value(0) == pytest.approx(60.0)  # 1.2 x the highest observed
    t.g_fixed = 1.0
    assert t.value(0) == pytest.approx(10.0)  # the lowest observed
    n = ReturnTarget("fixed", 0.0, clip=True, clip_c=1.2)
    n.observe([-100, -50])
    assert n.value(0) == pytest.approx(-40.0)  # optimism stays optimism for negative returns
    s = ReturnTarget("ucb", 0.0)
    s.load(json.loads(json.dumps(n.state())))
    assert list(s.recent) == [-100, -50] and (s.lowest, s.highest) == (-100, -50)


# --- replay: prioritized sampling, hindsight ablation, seeding ablation -----------------------
def _const_episodes(returns_per_step, lengths):
    return [make_episode(T, reward=r, seed=i) for i, (r, T) in enumerate(zip(returns_per_step, lengths))]


def test_prioritized_probabilities_and_empirical_frequencies():
    eps = _const_episodes([0.0, 1.0, 2.0], [10, 10, 10])  # returns 0, 10, 20
    buf = ReplayBuffer(10, np.zeros(3), np.ones(3), 1.0, priority_alpha=1.0)
    buf.fill(eps)
    priority = np.array([0.2, 10.2, 20.2])  # return - lowest + 1% of the range
    order = np.argsort([e.ret for e in buf.episodes])
    np.testing.assert_allclose(buf.sampling_probabilities()[order], priority / priority.sum())
    buf.priority_alpha = 2.0
    np.testing.assert_allclose(buf.sampling_probabilities()[order], priority ** 2 / (priority ** 2).sum())
    buf.priority_alpha, buf._packed = 1.0, None
    b = buf.sample(30_000, 3, np.random.default_rng(0))
    freq = np.array([(b.rewards[:, 0] == r).float().mean().item() for r in (0.0, 1.0, 2.0)])
    np.testing.assert_allclose(freq, priority / priority.sum(), atol=0.01)


def test_length_proportional_sampling_unchanged_by_default():
    eps = _const_episodes([1.0, 2.0], [10, 30])
    buf = ReplayBuffer(10, np.zeros(3), np.ones(3), 1.0)
    buf.fill(eps)
    b = buf.sample(20_000, 1, np.random.default_rng(0))
    assert (b.rewards[:, 0] == 2.0).float().mean().item() == pytest.approx(0.75, abs=0.01)


def test_hindsight_off_keeps_the_conditioning_target():
    online = Episode(np.zeros((3, 3), np.float32), np.zeros((3, 2), np.float32), np.array([1, 2, 3], np.float32),
                     truncated=True, online=True, target=10.0)
    offline = make_episode(4, reward=1.0)
    for hindsight, expected in ((True, [6, 5, 3]), (False, [10, 9, 7])):
        buf = ReplayBuffer(10, np.zeros(3), np.ones(3), 1.0, hindsight=hindsight, keep_next=True)
        buf.add(online)
        buf.add(offline)
        p = buf._pack()
        np.testing.assert_allclose(p["rtg"][:3], expected)
        np.testing.assert_allclose(p["rtg"][3:], [4, 3, 2, 1])  # offline: no target, true returns-to-go
        np.testing.assert_allclose(p["next_rtg"][:3], expected[1:] + [expected[-1] - 3])


def test_random_seeding_takes_n_at_random():
    eps = _const_episodes(np.arange(20, dtype=float), [5] * 20)
    top = ReplayBuffer(5, np.zeros(3), np.ones(3), 1.0)
    top.fill(eps)
    assert sorted(e.ret for e in top.episodes) == [75, 80, 85, 90, 95]
    rnd = ReplayBuffer(5, np.zeros(3), np.ones(3), 1.0)
    rnd.fill(eps, rng=np.random.default_rng(3))
    chosen = np.random.default_rng(3).choice(20, size=5, replace=False)
    assert sorted(e.ret for e in rnd.episodes) == sorted(eps[i].ret for i in chosen)


def test_batch_cat():
    buf = ReplayBuffer(10, np.zeros(3), np.ones(3), 1.0, keep_next=True)
    buf.fill(_const_episodes([1.0, 2.0], [10, 10]))
    rng = np.random.default_rng(0)
    b = Batch.cat([buf.sample(3, 4, rng), None, buf.sample(5, 4, rng)])
    assert b.states.shape == (8, 4, 3) and b.critic_mask.shape == (8, 4)


# --- learner: forgetting penalty, rollback to an earlier state --------------------------------
def _learner(**kw):
    from odt.algos.learner import Learner
    from odt.models.transformer import DecisionTransformer

    torch.manual_seed(0)
    spec = Config(embed_dim=16, n_layer=1, n_head=1, context_len=4, dropout=0.0).model_spec(3, 2)
    return Learner(DecisionTransformer(spec), "odt", lr=1e-3, weight_decay=0.0, warmup_steps=1, grad_clip=1.0, **kw)


def test_reg_loss_equals_the_tutorials_formula_and_enters_the_loss():
    learner = _learner()
    learner.set_anchor(2.0)
    anchor = [p.detach().clone() for p in learner.model.parameters()]
    buf = ReplayBuffer(10, np.zeros(3), np.ones(3), 1000.0)
    buf.fill(_const_episodes([1.0, 2.0], [10, 10]))
    for _ in range(3):
        m = learner.update(buf.sample(8, 4, np.random.default_rng(0)))
    expected = sum(float(((p.detach() - a) ** 2).mean()) for p, a in zip(learner.model.parameters(), anchor))
    assert float(learner.reg_loss().detach()) == pytest.approx(expected, rel=1e-6)
    assert m["reg_loss"] > 0
    # without an anchor there is no penalty
    assert "reg_loss" not in _learner().update(buf.sample(8, 4, np.random.default_rng(0)))


def test_lr_scale_and_restore_weights_keep_counters_forward():
    learner = _learner()
    buf = ReplayBuffer(10, np.zeros(3), np.ones(3), 1000.0)
    buf.fill(_const_episodes([1.0, 2.0], [10, 10]))
    learner.update(buf.sample(8, 4, np.random.default_rng(0)))
    saved = {k: v for k, v in learner.state_dict().items()}
    import copy
    saved = copy.deepcopy(saved)
    learner.set_lr_scale(0.1)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    m = learner.update(buf.sample(8, 4, np.random.default_rng(1)))
    assert m["lr"] == pytest.approx(1e-4)
    learner.restore_weights(saved)
    for k, v in learner.model.state_dict().items():
        assert torch.equal(v, saved["model"][k])
    assert learner.updates == 2 and learner.lr_scale == pytest.approx(0.1)


# --- short runs: each switch visible in metrics.jsonl ------------------------------------------
def _run(tmp_path, name, *flags, command="run"):
    out = tmp_path / name
    args = [command, "--preset", "reward-hill", "--out", str(out), "--no-progress", "--pretrain-updates", "100",
            "--online-steps", "200", "--eval-every", "5", *flags]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, rows


def _rounds(rows):
    return [r for r in rows if r.get("event") == "round"]


def _progress_before(rounds, budget):
    steps = [0] + [r["online_steps"] for r in rounds[:-1]]
    return [s / budget for s in steps]


def test_schedules_in_a_run(tmp_path):
    _, rows = _run(tmp_path, "sched", "--noise-std", "0.3", "--noise-schedule", "linear", "--noise-floor", "0.05",
                   "--offline-ratio", "0.5:0.1", "--finetune-lr", "1e-4", "--lr-decay", "linear",
                   "--reg-weight", "0.5", "--return-target", "ucb", "--target-beta0", "0", "--target-window", "10")
    rounds = _rounds(rows)
    assert len(rounds) == 20
    for r, p in zip(rounds, _progress_before(rounds, 200)):
        assert r["noise_std"] == pytest.approx(max(0.05, 0.3 * (1 - p)))
        assert r["offline_ratio"] == pytest.approx(0.5 + (0.1 - 0.5) * p)
        assert r["lr"] == pytest.approx(1e-4 * (1 - p))
        assert r["reg_loss"] >= 0
    assert rounds[-1]["reg_loss"] > 0
    # ucb with beta 0 over the last 10 returns: each round's target is the previous round's mean return
    for prev, r in zip(rounds, rounds[1:]):
        assert r["g_online"] == pytest.approx(prev["rollout_return_mean"], rel=1e-5)


def test_defaults_stay_the_papers_odt(tmp_path):
    _, rows = _run(tmp_path, "paper", "--g-online", "0.7")
    rounds = _rounds(rows)
    assert all(r["g_online"] == 0.7 and r["noise_std"] == 0.0 for r in rounds)
    assert not any("offline_ratio" in r or "reg_loss" in r for r in rounds)
    assert all(r["lr"] == pytest.approx(1e-3) for r in rounds)
    seeded = next(r for r in rows if r.get("event") == "buffer_seeded")
    assert seeded["seeding"] == "top"
    assert not any(r.get("event") in ("rollback_to_best", "early_stop") for r in rows)


def test_target_clip_multiple_and_best_eval_target(tmp_path):
    from odt.data.sources import load_dataset

    best_data = load_dataset("odt/reward-hill").returns().max()
    _, rows = _run(tmp_path, "clip", "--target-multiple", "50", "--target-clip", "--eval-target", "best",
                   "--ref-min-score", "0", "--ref-max-score", "1", "--buffer-seeding", "random")
    rounds = _rounds(rows)
    assert rounds[0]["g_online"] == pytest.approx(1.2 * best_data)  # 50 x expert, clipped to 1.2 x highest
    evals = [r for r in rows if r.get("event") == "eval"]
    assert evals[0]["g_eval"] == pytest.approx(best_data)
    assert all(b["g_eval"] >= a["g_eval"] for a, b in zip(evals, evals[1:]))
    assert next(r for r in rows if r.get("event") == "buffer_seeded")["seeding"] == "random"


def test_best_checkpoint_rollback_restores_best_weights_exactly_and_early_stop(tmp_path):
    from odt.checkpoint import load_checkpoint
    from odt.data.buffer import ReplayBuffer
    from odt.setup import setup

    cfg = preset("reward-hill")
    cfg.out, cfg.progress, cfg.pretrain_updates = tmp_path / "rb", False, 20
    cfg.rollback_drop, cfg.rollback_lr_factor, cfg.early_stop_patience = 0.1, 0.5, 2
    run = setup(cfg, "run")
    try:
        run.pretrain()
        run.phase = "online"
        run.buffer = ReplayBuffer.for_config(run.cfg, 100, run.obs_mean, run.obs_std)
        run.buffer.fill(run.dataset.episodes)
        assert run._after_eval({"eval_return_mean": 1.0}) is None  # the first is the best
        best = load_checkpoint(run.run_dir / "checkpoints" / "best.pt")
        run._updates(run.buffer, 5)
        assert not torch.equal(next(run.learner.model.parameters()),
                               best["learner"]["model"][next(iter(best["learner"]["model"]))])
        updates = run.learner.updates
        assert run._after_eval({"eval_return_mean": 0.95}) is None  # within 10%: no rollback
        assert run._after_eval({"eval_return_mean": 0.5}) == "rolled_back"
        for k, v in run.learner.model.state_dict().items():
            assert torch.equal(v, best["learner"]["model"][k]), k
        assert torch.equal(run.learner.log_lambda, best["learner"]["log_lambda"])
        assert run.learner.updates == updates and run.safety.lr_factor == 0.5
        assert run._after_eval({"eval_return_mean": 0.99}) == "stop"  # 3 evaluations without a new best
    finally:
        run.close()
    events = [json.loads(line) for line in (tmp_path / "rb" / "metrics.jsonl").read_text().splitlines()]
    names = [e["event"] for e in events if e.get("event") in ("new_best", "rollback_to_best", "early_stop")]
    assert names == ["new_best", "rollback_to_best", "early_stop"]
    rb = next(e for e in events if e.get("event") == "rollback_to_best")
    assert rb["best_return"] == 1.0 and rb["eval_return"] == 0.5 and rb["lr_factor"] == 0.5


def test_early_stop_ends_finetuning_before_the_budget(tmp_path):
    out, rows = _run(tmp_path, "early", "--early-stop-patience", "1", "--eval-every", "1", "--online-steps", "2000")
    events = [r["event"] for r in rows if "event" in r]
    assert "early_stop" in events  # ten-step evaluations of a one-step task rarely improve twice in a row
    summary = json.loads((out / "summary.json").read_text())
    assert summary["online_steps"] < 2000 and "best" in summary
    assert (out / "checkpoints" / "best.pt").is_file()


def test_ensemble_disagreement_and_member_modes(tmp_path):
    from odt.policy import EnsemblePolicy, load_policy

    out, rows = _run(tmp_path, "ens", "--ensemble", "2", "--online-steps", "50")
    rounds = _rounds(rows)
    assert all(r["ensemble_disagreement"] > 0 for r in rounds)
    policy = load_policy(out, "final")
    assert isinstance(policy, EnsemblePolicy) and len(policy.members) == 2
    a, b = (next(m.model.parameters()) for m in policy.members)
    assert not torch.equal(a, b)  # separately seeded
    _, rows = _run(tmp_path, "ens-member", "--ensemble", "2", "--ensemble-mode", "member", "--online-steps", "50")
    assert _rounds(rows)


def test_toolbox_flags_on_finetune_and_run():
    flags = ["--return-target", "percentile", "--noise-schedule", "cosine", "--noise-std", "0.2",
             "--offline-ratio", "0.5:0.1", "--reg-weight", "0.1", "--rollback-drop", "0.2",
             "--early-stop-patience", "3"]
    for command in ("run", "finetune"):
        cfg = parse_config(command, flags)
        assert (cfg.return_target, cfg.noise_schedule, cfg.noise_std, cfg.offline_ratios(), cfg.reg_weight,
                cfg.rollback_drop, cfg.early_stop_patience) == ("percentile", "cosine", 0.2, (0.5, 0.1), 0.1, 0.2, 3)


@pytest.mark.parametrize("flags, message", [
    (["--offline-ratio", "0.5:x"], "--offline-ratio takes START or START:END"),
    (["--offline-ratio", "1.5"], "fractions in [0, 1]"),
    (["--rollback-drop", "2"], "--rollback-drop is a fraction"),
    (["--target-p1", "120"], "--target-p1 is a percentile"),
    (["--noise-std", "-1"], "--noise-std must be >= 0"),
    (["--ensemble", "0"], "--ensemble must be >= 1"),
    (["--tasks", "Hopper-v5"], "is not ENV=DATASET"),
    (["--tasks", "Hopper-v5=odt/hopper-medium", "--return-target", "ucb"], "fixed targets per task"),
    (["--target-multiple", "2"], "--target-multiple needs the expert return"),  # before pretraining, not after
])
def test_bad_toolbox_settings_are_one_line_errors(tmp_path, capsys, flags, message):
    out = tmp_path / "never"
    assert main(["run", "--preset", "reward-hill", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_old_configs_with_explore_noise_still_load():
    d = Config(algo="vidt").to_dict()
    del d["noise_std"]
    d["explore_noise"] = 0.3
    assert Config.from_dict(d).exploration_noise() == 0.3
    d["algo"] = "odt"
    assert Config.from_dict(d).exploration_noise() == 0.0


@pytest.mark.slow
def test_multitask_pads_spaces_mixes_batches_and_evaluates_per_task(tmp_path, hopper_npz):
    from odt.data.generate import collect
    from odt.data.formats import save_npz

    pend = tmp_path / "pendulum.npz"
    save_npz(collect("InvertedPendulum-v5", 1500, seed=0, policy=None, name="p", log=lambda line: None), pend)
    out = tmp_path / "mt"
    assert main(["run", "--preset", "cpu-small", "--tasks", f"Hopper-v5={hopper_npz}",
                 f"InvertedPendulum-v5={pend}:1000:2000", "--out", str(out), "--no-progress", "--embed-dim", "32",
                 "--pretrain-updates", "30", "--online-steps", "300", "--updates-per-round", "5",
                 "--eval-episodes", "2", "--eval-every", "3", "--buffer-size", "40"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    ev = [r for r in rows if r.get("event") == "eval"][-1]
    assert ev["eval_episodes"] == 4 and ev["g_eval_invertedpendulum_v5"] == 1000.0
    assert ev["g_eval_hopper_v5"] == pytest.approx(3234.3)  # D4RL's expert return
    assert "eval_hopper_v5_normalized_mean" in ev and "eval_invertedpendulum_v5_return_mean" in ev
    assert ev["eval_return_mean"] == pytest.approx((ev["eval_hopper_v5_return_mean"]
                                                    + ev["eval_invertedpendulum_v5_return_mean"]) / 2)
    r = _rounds(rows)[0]
    assert r["g_online_hopper_v5"] == pytest.approx(2 * 3234.3) and r["g_online_invertedpendulum_v5"] == 2000.0
    seeded = next(r for r in rows if r.get("event") == "buffer_seeded")
    assert seeded["trajectories"] == 40  # 20 of each task
    state = torch.load(out / "checkpoints" / "final.pt", weights_only=True)
    assert state["spec"]["obs_dim"] == 11 and state["spec"]["act_dim"] == 3  # Hopper's: the larger
    assert main(["eval", str(out)]) == 2  # per-task evaluations live in metrics.jsonl


@pytest.mark.parametrize("checkpoint", ["latest.prev", "latest"])
def test_resume_restores_the_toolbox_state_exactly(tmp_path, checkpoint):
    """A run resumed from its second-to-last checkpoint writes the same metrics as the whole run:
    targets, noise, replay mixing, penalty anchor, best checkpoint and ensemble all carry over.
    From the last one (after the last round's evaluation), the evaluation is not redone."""
    import os

    flags = ["--return-target", "ucb", "--noise-std", "0.2", "--noise-schedule", "cosine", "--offline-ratio", "0.5:0.1",
             "--reg-weight", "0.5", "--rollback-drop", "0.01", "--ensemble", "2", "--eval-every", "2",
             "--checkpoint-every", "1", "--online-steps", "100", "--no-hindsight"]
    if checkpoint == "latest":  # no rollback at the last evaluation: that one would be measured again anyway
        flags[flags.index("--rollback-drop") + 1] = "0.99"
    out, rows = _run(tmp_path, "whole", *flags)
    ckpt = out / "checkpoints"
    for suffix in ("", ".sha256"):  # as if killed right after that checkpoint
        os.replace(ckpt / f"{checkpoint}.pt{suffix}", ckpt / f"latest.pt{suffix}")
    (out / "summary.json").unlink()
    (ckpt / "final.pt").unlink()
    assert main(["run", "--resume", str(out)]) == 0
    resumed = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert resumed == rows
