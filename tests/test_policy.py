import numpy as np
import pytest
import torch

from odt.envs.make import make_vector_env
from odt.models.transformer import DecisionTransformer, ModelSpec
from odt.policy import Policy
from odt.scaling import Scaling
from odt.rollout import rollout


def _policy(context=5, head="tanh_gaussian", deterministic=True, **kw):
    spec = ModelSpec(obs_dim=11, act_dim=3, embed_dim=32, n_layer=2, n_head=2, dropout=0.0, context_len=20,
                     action_head=head, **kw)
    model = DecisionTransformer(spec)
    return Policy(model, Scaling(np.zeros(11), np.ones(11), -np.ones(3), np.ones(3)), rtg_scale=100.0,
                  context=context, action="mean" if deterministic else "sample")


def test_acting_costs_the_context_not_K():
    policy = _policy(context=5)
    seen = []
    policy.model.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    policy.reset(100.0)
    for _ in range(12):
        policy.act(np.zeros(11, np.float32), 1.0)
    # 3 tokens a step, less the placeholder action token of the current step
    assert seen == [3 * min(t + 1, 5) - 1 for t in range(12)]


def test_return_to_go_falls_by_each_reward():
    policy = _policy()
    policy.reset(target_return=300.0)
    policy.act(np.zeros(11))
    policy.act(np.zeros(11), 10.0)
    policy.act(np.zeros(11), 40.0)
    np.testing.assert_allclose(policy._rtg[0, :3, 0].numpy(), [3.0, 2.9, 2.5], rtol=1e-6)


def test_act_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        _policy().act(np.zeros(11))


def test_single_and_batched_actions_agree():
    policy = _policy()
    obs = np.random.default_rng(0).normal(size=(4, 11)).astype(np.float32)
    policy.reset(100.0, n=4)
    batched = [policy.act(obs, np.zeros(4)) for _ in range(3)]
    for i in range(4):
        policy.reset(100.0)
        single = [policy.act(obs[i], 0.0) for _ in range(3)]
        for t in range(3):
            np.testing.assert_allclose(single[t], batched[t][i], atol=1e-5)


def test_actions_stay_in_bounds_and_sampling_varies():
    policy = _policy(deterministic=False, log_std_min=0.0, log_std_max=1.0)
    policy.generator = torch.Generator().manual_seed(0)
    policy.reset(100.0, n=64)
    a = policy.act(np.zeros((64, 11), np.float32), np.zeros(64))
    assert a.shape == (64, 3) and np.all(np.abs(a) <= 1.0) and a.std(0).min() > 0.1


def test_rollout_runs_one_episode_per_env_on_hopper():
    policy = _policy()
    envs = make_vector_env("Hopper-v5", 3)
    res = rollout(policy, envs, 100.0, seed=0)
    envs.close()
    assert len(res.episodes) == 3
    for ep in res.episodes:
        assert ep.observations.shape == (len(ep), 11) and ep.actions.shape == (len(ep), 3)
        assert ep.terminated != ep.truncated and ep.online
        # Hopper's healthy reward is 1 per step plus forward progress: returns are sums of those.
        assert ep.ret == pytest.approx(float(ep.rewards.sum()))
    # Same seed, deterministic policy: the same episodes.
    envs = make_vector_env("Hopper-v5", 3)
    res2 = rollout(policy, envs, 100.0, seed=0)
    np.testing.assert_allclose(res.returns, res2.returns)


def test_pruned_last_block_equals_the_full_computation():
    """The last block computes only state-token outputs (and acting only the last one); the result
    must equal running every block on every token and picking the state tokens."""
    torch.manual_seed(0)
    spec = ModelSpec(obs_dim=11, act_dim=3, embed_dim=64, n_layer=3, n_head=2, dropout=0.0, timestep_embedding=True)
    m = DecisionTransformer(spec).eval()
    B, T = 4, 7
    args = (torch.randn(B, T, 1), torch.randn(B, T, 11), torch.randn(B, T, 3), torch.randint(0, 900, (B, T)))
    tokens = torch.stack([m.embed_return(args[0]), m.embed_state(args[1]), m.embed_action(args[2])], dim=2)
    x = m.embed_ln((tokens + m.embed_timestep(args[3]).unsqueeze(2)).reshape(B, 3 * T, -1))
    for block in m.blocks:
        x = block(x)
    full = m.ln_f(x).view(B, T, 3, -1)[:, :, 1]
    with torch.no_grad():
        torch.testing.assert_close(m.hidden(*args), full, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m.hidden(*args, last_only=True)[:, 0], full[:, -1], rtol=1e-5, atol=1e-5)


def test_sliding_window_matches_a_direct_forward_pass():
    """After many steps the policy acts on exactly the last `context` steps, with the RTG lowered
    by every reward so far; episodes may run past max_ep_len (timesteps clamp)."""
    policy = _policy(context=5, timestep_embedding=True, max_ep_len=8)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(12, 11)).astype(np.float32)
    rew = rng.uniform(0, 3, 12).astype(np.float32)
    policy.reset(300.0)
    acts = [policy.act(obs[0])]
    for t in range(1, 12):
        acts.append(policy.act(obs[t], rew[t - 1]))
    rtg = (300.0 - np.concatenate([[0.0], np.cumsum(rew[:11])])) / 100.0
    w = slice(7, 12)
    with torch.no_grad():
        a = policy.model.act_output(torch.tensor(rtg[w], dtype=torch.float32).view(1, 5, 1),
                                    torch.tensor(obs[w]).unsqueeze(0),
                                    torch.tensor(np.array(acts[7:11] + [np.zeros(3)]), dtype=torch.float32).unsqueeze(0),
                                    torch.arange(7, 12).unsqueeze(0)).mode()
    np.testing.assert_allclose(acts[-1], a[0].numpy(), atol=1e-5)


def test_deterministic_actor_explores_with_gaussian_noise():
    explore = _policy(head="deterministic", deterministic=False)
    explore.noise_std, explore.generator = 0.1, torch.Generator().manual_seed(0)
    greedy = _policy(head="deterministic", deterministic=True)
    greedy.model.load_state_dict(explore.model.state_dict())
    greedy.noise_std = 0.1  # evaluation never adds noise
    obs = np.random.default_rng(0).normal(size=(2000, 11)).astype(np.float32)
    explore.reset(0.0, n=2000)
    greedy.reset(0.0, n=2000)
    noisy, mean = explore.act(obs), greedy.act(obs)
    inside = np.abs(mean) < 0.6  # away from the clip at the bounds
    diff = (noisy - mean)[inside]
    assert abs(diff.mean()) < 0.01 and diff.std() == pytest.approx(0.1, rel=0.05)
    greedy.reset(0.0, n=2000)
    np.testing.assert_array_equal(greedy.act(obs), mean)


def test_mean_action_exploration_is_the_mean_plus_the_noise():
    """--explore-action mean: a stochastic actor explores with tanh(mean) + N(0, noise^2), clipped;
    sample (the paper): tanh(mean + std * eps)."""
    torch.manual_seed(0)
    policy = _policy(deterministic=True)
    obs = np.random.default_rng(0).normal(size=(256, 11)).astype(np.float32)
    policy.reset(100.0, n=256)
    mean = policy.act(obs)
    for sample, noise in [(False, 0.0), (False, 0.2), (True, 0.0)]:
        explore = Policy(policy.model, policy.scaling, rtg_scale=100.0, context=5,
                         action="sample" if sample else "mean+noise", noise_std=noise,
                         generator=torch.Generator().manual_seed(1))
        explore.reset(100.0, n=256)
        diff = explore.act(obs) - mean
        if not sample and noise == 0:
            np.testing.assert_array_equal(diff, 0)
        elif not sample:  # clipping at +-1 only shrinks the noise
            inside = np.abs(mean) < 0.5
            assert abs(diff[inside].std() - noise) < 0.02 and abs(diff[inside].mean()) < 0.02
        else:
            assert np.abs(diff).mean() > 0.05  # a fresh actor's std is large
