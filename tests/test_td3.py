"""ViDT: the TD3 critic, its targets and data, the RL term in the actor loss, and the reward hill."""
import json

import numpy as np
import pytest
import torch
from helpers import make_buffer, make_episode, packed, step

from odt.algos.learner import Learner, TD3Settings
from odt.config import OptimSettings
from odt.algos.losses import critic_loss, rl_term, td3_target
from odt.cli import main
from odt.data.trajectories import Episode
from odt.envs.reward_hill import hill_reward
from odt.models.transformer import DecisionTransformer, ModelSpec


def test_td3_target_and_losses_by_hand():
    r = torch.tensor([1.0, 2.0, 3.0])
    term = torch.tensor([0.0, 1.0, 0.0])
    q1n, q2n = torch.tensor([10.0, 10.0, -4.0]), torch.tensor([12.0, 8.0, -5.0])
    # y = r + 0.9 * (1 - term) * min(q1', q2')
    np.testing.assert_allclose(td3_target(r, term, q1n, q2n, 0.9), [1 + 9.0, 2.0, 3 - 4.5])
    q1, q2, y = torch.tensor([1.0, 0.0, 5.0]), torch.tensor([2.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 1.0])
    mask = torch.tensor([1.0, 1.0, 0.0])  # the third position has no target
    assert float(critic_loss(q1, q2, y, mask)) == pytest.approx(((0 + 1) + (1 + 0)) / 2)
    q = torch.tensor([2.0, -4.0, 100.0])
    assert float(rl_term(q, mask, normalize=False)) == pytest.approx(1.0)  # -mean(2, -4)
    assert float(rl_term(q, mask, normalize=True)) == pytest.approx(1.0 / 3.0)  # / mean |Q| = 3


def test_buffer_keeps_next_states_and_termination_apart_from_truncation():
    term = make_episode(3, obs_dim=2, act_dim=1, seed=1)
    term.terminated, term.truncated, term.final_observation = True, False, np.full(2, 7.0, np.float32)
    cut = make_episode(2, obs_dim=2, act_dim=1, seed=2)  # time limit, s_{T+1} known
    cut.final_observation = np.full(2, 9.0, np.float32)
    unknown = make_episode(2, obs_dim=2, act_dim=1, seed=3)  # truncated, s_{T+1} unknown
    buf = make_buffer(10, obs_dim=2, rtg_scale=2.0, keep_next=True)
    for e in (term, cut, unknown):
        buf.add(e)
    p = packed(buf)
    np.testing.assert_array_equal(p["next_states"][:3], np.concatenate([term.observations[1:], [[7.0, 7.0]]]))
    np.testing.assert_array_equal(p["next_states"][4], [9.0, 9.0])
    np.testing.assert_array_equal(p["terminals"], [0, 0, 1, 0, 0, 0, 0])  # truncation never terminates
    np.testing.assert_array_equal(p["bootstrap"], [1, 1, 1, 1, 1, 1, 0])
    # g_{t+1} = g_t - r_t (hindsight), 0 after the last step; divided by rtg_scale like g
    np.testing.assert_allclose(p["next_rtg"][:3], (p["rtg"][:3] - term.rewards / 2.0)[:3], atol=1e-6)
    assert p["next_rtg"][2] == 0.0
    np.testing.assert_array_equal(p["next_actions"][:3], np.concatenate([term.actions[1:], [[0.0]]]))
    b = buf.sample(64, 2, np.random.default_rng(0))
    assert b.critic_mask is not None and bool((b.critic_mask <= b.mask).all())


def test_mc_returns_are_the_critics_discounted_rewards_to_the_end_by_hand():
    """The critic's horizon metric: what Q(s_t, a_t) of the data's own policy is, with the critics'
    gamma and reward shift, cut at the episode's end (no bootstrap, truncated or not)."""
    e = make_episode(3, obs_dim=2, act_dim=1, seed=1)
    e.terminated = True
    cut = make_episode(2, obs_dim=2, act_dim=1, seed=2)
    buf = make_buffer(10, obs_dim=2, rtg_scale=2.0, keep_next=True,
                       gamma=0.5, reward_shift=-1.0)
    buf.add(e), buf.add(cut)
    r, c = e.rewards.astype(np.float64) - 1.0, cut.rewards.astype(np.float64) - 1.0
    expected = [r[0] + 0.5 * r[1] + 0.25 * r[2], r[1] + 0.5 * r[2], r[2], c[0] + 0.5 * c[1], c[1]]
    np.testing.assert_allclose(packed(buf)["mc_returns"], expected, rtol=1e-6)
    b = buf.sample(32, 3, np.random.default_rng(0))
    assert bool((b.mc_returns * (1 - b.mask) == 0).all())  # padding is 0, like every other field


def _learner(td3: TD3Settings, algo="dt", head="deterministic"):
    torch.manual_seed(0)
    spec = ModelSpec(obs_dim=1, act_dim=1, embed_dim=16, n_layer=1, n_head=1, dropout=0.0, context_len=1,
                     action_head=head)
    return Learner(DecisionTransformer(spec), algo, OptimSettings(lr=1e-3, weight_decay=0.0, warmup_steps=1, grad_clip=1.0),
                   td3=td3)


def _hill_buffer(n=256, seed=0):
    rng = np.random.default_rng(seed)
    buf = make_buffer(n, obs_dim=1, rtg_scale=1.0, keep_next=True)
    for a in rng.uniform(-1, 1, n):
        buf.add(Episode(np.zeros((1, 1), np.float32), np.array([[a]], np.float32),
                        np.array([hill_reward(a)], np.float32), terminated=True,
                        final_observation=np.zeros(1, np.float32)))
    return buf


def test_policy_delay_and_polyak_targets():
    learner = _learner(TD3Settings(policy_delay=2, tau=0.25))
    buf = _hill_buffer(32)
    critic_before = [p.detach().clone() for p in learner.critics.critic_target.parameters()]
    actor_before = [p.detach().clone() for p in learner.critics.actor_target.parameters()]
    m1 = step(learner, buf.sample(8, 1, np.random.default_rng(0)))
    assert "critic_loss" in m1 and "loss" not in m1 and learner.updates == 0  # critic only
    assert all(torch.equal(a, b) for a, b in zip(critic_before, learner.critics.critic_target.parameters()))
    m2 = step(learner, buf.sample(8, 1, np.random.default_rng(1)))
    assert {"critic_loss", "q_mean", "loss", "rl_loss", "mse"} <= m2.keys()
    assert (learner.updates, learner.critic_updates, learner.calls_per_actor_update) == (1, 2, 2)
    # target <- target + tau * (source - target), after the actor step
    for before, target, source in zip(critic_before, learner.critics.critic_target.parameters(), learner.critics.critic.parameters()):
        torch.testing.assert_close(target, before + 0.25 * (source - before))
    for before, target, source in zip(actor_before, learner.critics.actor_target.parameters(), learner.model.parameters()):
        torch.testing.assert_close(target, before + 0.25 * (source - before))


def test_critic_learns_the_one_step_reward_and_the_rl_term_climbs_it():
    learner = _learner(TD3Settings(policy_delay=1, rl_alpha=1.0))
    buf = _hill_buffer()
    rng = np.random.default_rng(0)
    for _ in range(400):
        learner._critic_step(buf.sample(64, 1, rng))
    a = torch.linspace(-1, 1, 21).reshape(-1, 1)
    q1, q2 = learner.critics.critic(torch.zeros(21, 1), a)
    # Terminal one-step episodes: y = r, so Q(s, a) is the reward hill itself.
    np.testing.assert_allclose(q1.detach().numpy(), hill_reward(a[:, 0].numpy()), atol=0.15)
    assert int(q1.argmax()) in (9, 10, 11)  # the peak, a = 0


def test_td_reward_shift_is_a_shift_of_the_critics_rewards_only():
    # one critic step with the shift equals one on rewards shifted by hand, and the shift is not
    # in the batch (the return-to-go keeps the environment's rewards)
    buf = _hill_buffer(32)
    batch = buf.sample(16, 1, np.random.default_rng(0))
    shifted = _learner(TD3Settings(td_reward_shift=-1.0))
    by_hand = _learner(TD3Settings())
    rewards = batch.rewards.clone()
    shifted._critic_step(batch)
    assert torch.equal(batch.rewards, rewards)
    batch.rewards = rewards - 1.0
    by_hand._critic_step(batch)
    for x, y in zip(shifted.critics.critic.parameters(), by_hand.critics.critic.parameters()):
        torch.testing.assert_close(x, y)


def test_state_dict_round_trip_keeps_the_critic():
    a = _learner(TD3Settings())
    buf = _hill_buffer(32)
    for i in range(3):
        a.update(buf.sample(8, 1, np.random.default_rng(i)))
    b = _learner(TD3Settings())
    b.load_state_dict(a.state_dict())
    assert (b.updates, b.critic_updates) == (a.updates, a.critic_updates)
    for x, y in zip(list(a.critics.critic.parameters()) + list(a.critics.actor_target.parameters()),
                    list(b.critics.critic.parameters()) + list(b.critics.actor_target.parameters())):
        assert torch.equal(x, y)
    # A checkpoint without critics (dt) gives a fresh critic and a target actor equal to the actor.
    plain = _learner(None)
    c = _learner(TD3Settings())
    c.load_networks(plain.state_dict())
    for x, y in zip(c.critics.actor_target.parameters(), plain.model.parameters()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("algo", ["vidt", "odt-td3"])
def test_td3_algorithms_log_critic_metrics(algo, tmp_path, capsys):
    out = tmp_path / algo
    assert main(["run", "--preset", "reward-hill", "--algo", algo, "--pretrain-updates", "4", "--online-steps", "20",
                 "--updates-per-round", "2", "--eval-every", "1", "--out", str(out), "--no-progress"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["algo"] == algo and cfg["rl_alpha"] == 0.1 and cfg["policy_delay"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in rows if r.get("event") == "round"]
    assert rounds and all({"q_mean", "mc_return_mean", "critic_loss", "rl_loss"} <= r.keys() for r in rounds)
    pre = [r for r in rows if r["phase"] == "pretrain" and "loss" in r]
    assert pre and all("critic_loss" in r and "rl_loss" not in r for r in pre)  # RL term off in pretraining
    assert all("mc_return_mean" in r for r in pre)
    assert rounds[-1]["updates"] == 4 + 2 * len(rounds)  # actor updates; the critic made twice as many


def test_critic_pretraining_trains_the_critics_alone_before_the_first_round(tmp_path):
    out = tmp_path / "warm"
    assert main(["run", "--preset", "reward-hill", "--algo", "vidt", "--pretrain-updates", "4", "--online-steps", "20",
                 "--updates-per-round", "2", "--critic-pretrain-updates", "6", "--out", str(out), "--no-progress"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    warm = [r for r in rows if r.get("event") == "critic_pretrained"]
    assert len(warm) == 1 and warm[0]["critic_updates"] == 4 * 2 + 6 and warm[0]["updates"] == 4  # actor held
    assert {"critic_loss", "q_mean", "mc_return_mean"} <= warm[0].keys()
    first_round = next(i for i, r in enumerate(rows) if r.get("event") == "round")
    assert rows.index(warm[0]) < first_round
    assert main(["run", "--preset", "reward-hill", "--algo", "vidt", "--critic-pretrain-updates", "-1",
                 "--out", str(tmp_path / "bad")]) == 2


@pytest.mark.slow
def test_reward_hill_vidt_finds_the_peak_odt_does_worse(tmp_path, capsys):
    seeds = ["0", "1", "2", "3", "4"]
    assert main(["toy", "reward-hill", "--algo", "odt", "vidt", "--seeds", *seeds, "--out", str(tmp_path),
                 "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    vidt = [r for r in results if r["algo"] == "vidt"]
    odt = [r for r in results if r["algo"] == "odt"]
    for r in results:  # the reported reward is the hill's at the reported action
        assert r["reward"] == pytest.approx(float(hill_reward(r["action"])), abs=1e-6)
    assert sum(abs(r["action"]) <= 0.1 and r["reward"] >= 0.9 for r in vidt) >= 4
    assert np.mean([r["reward"] for r in odt]) < np.mean([r["reward"] for r in vidt])
    assert (tmp_path / "reward_hill.png").stat().st_size > 10_000


def test_toy_json_for_one_run(tmp_path, capsys, monkeypatch):
    import odt.config

    real = odt.config.preset

    def short(name):  # the same command, a shorter run
        cfg = real(name)
        cfg.pretrain_updates, cfg.online_steps = 5, 10
        return cfg

    monkeypatch.setattr("odt.toy.preset", short)
    assert main(["toy", "reward-hill", "--algo", "vidt", "--out", str(tmp_path), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"action", "reward", "algo", "seed"} <= r.keys() and -1 <= r["action"] <= 1
