"""`odt data generate`: real SAC training (briefly), real Hopper-v5, a real Minari store."""
import json

import numpy as np
import pytest

from odt.cli import main
from odt.data.embedded import ASSETS
from odt.data.generate import BehaviourPolicy, collect
from odt.data.sources import load_dataset
from odt.envs.make import make_env


@pytest.fixture(autouse=True)
def _stores(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setenv("ODT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def _metadata(tmp_path, dataset_id):
    return json.loads((tmp_path / "minari" / dataset_id / "data" / "metadata.json").read_text())


def test_random_dataset_and_its_metadata(tmp_path, capsys):
    assert main(["data", "generate", "--env", "Hopper-v5", "--quality", "random", "--transitions", "500",
                 "--out", "gen/hopper-random-v0", "--seed", "3"]) == 0
    assert "[collect] 500/500 steps" in capsys.readouterr().out  # progress is shown
    ds = load_dataset("gen/hopper-random-v0")
    assert ds.n_transitions == 500 and ds.env_id == "Hopper-v5"
    meta = _metadata(tmp_path, "gen/hopper-random-v0")
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (-20.272305, 3234.3)
    assert meta["odt"]["quality"] == "random" and meta["odt"]["seed"] == 3
    assert {"gymnasium", "mujoco", "minari"} <= meta["odt"]["versions"].keys()
    # an existing id is never overwritten
    assert main(["data", "generate", "--env", "Hopper-v5", "--quality", "random", "--transitions", "10",
                 "--out", "gen/hopper-random-v0"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert load_dataset("gen/hopper-random-v0").n_transitions == 500


@pytest.mark.slow
def test_medium_then_medium_replay_with_a_trained_policy(tmp_path, capsys):
    # A target any policy reaches: training stops at the first evaluation, after 300 SAC steps.
    common = ["--env", "Hopper-v5", "--target-return", "-1000", "--eval-every", "300", "--eval-episodes", "1"]
    assert main(["data", "generate", *common, "--quality", "medium", "--transitions", "400",
                 "--out", "gen/hopper-medium-v0"]) == 0
    out = capsys.readouterr().out
    assert "[sac] 300/1000000 steps" in out and "[collect] 400/400 steps" in out
    meta = _metadata(tmp_path, "gen/hopper-medium-v0")["odt"]
    assert meta["behaviour"]["train_steps"] == 300 and meta["behaviour"]["reached_target"]
    assert meta["target_return"] == -1000 and "stable_baselines3" in meta["behaviour"]["versions"]
    assert (tmp_path / "minari" / "gen/hopper-medium-v0" / "behaviour_policy.safetensors").is_file()
    assert load_dataset("gen/hopper-medium-v0").n_transitions == 400

    # The same work dir holds that policy: refused unless reused explicitly.
    work = tmp_path / "runs" / "generate" / "gen__hopper-medium-v0"
    assert main(["data", "generate", *common, "--quality", "medium", "--transitions", "50",
                 "--out", "gen/again-v0", "--work-dir", str(work)]) == 2
    assert "--policy" in capsys.readouterr().err
    assert main(["data", "generate", "--env", "Hopper-v5", "--quality", "medium", "--transitions", "50",
                 "--out", "gen/again-v0", "--policy", str(work / "policy.safetensors")]) == 0

    assert main(["data", "generate", *common, "--quality", "medium-replay", "--transitions", "250",
                 "--out", "gen/hopper-medium-replay-v0", "--work-dir", str(tmp_path / "w2")]) == 0
    replay = np.load(tmp_path / "w2" / "replay.npz")
    ds = load_dataset("gen/hopper-medium-replay-v0")
    assert ds.n_transitions == 250  # the buffer's first 250 of its 300 steps, in order
    np.testing.assert_allclose(np.concatenate([e.rewards for e in ds.episodes]), replay["rewards"][:250], rtol=1e-6)
    np.testing.assert_allclose(np.concatenate([e.actions for e in ds.episodes]), replay["actions"][:250], rtol=1e-6)


@pytest.mark.parametrize("args,needle", [
    (["--env", "Nope-v0", "--quality", "random", "--out", "gen/x-v0"], "unknown environment"),
    (["--env", "Hopper-v5", "--quality", "random", "--out", "not an id"], "not a Minari dataset id"),
    (["--env", "Hopper-v5", "--quality", "random", "--out", "gen/x-v0", "--transitions", "0"], "must be positive"),
    (["--env", "Pendulum-v1", "--quality", "medium", "--out", "gen/x-v0"], "--target-return"),
    (["--env", "Taxi-v4", "--quality", "random", "--out", "gen/x-v0"], "odt needs flat Box observations"),
    (["--env", "CartPole-v1", "--quality", "medium-replay", "--out", "gen/x-v0"], "PPO, which keeps none"),
    (["--env", "Hopper-v5", "--quality", "medium", "--out", "gen/x-v0", "--policy", "/nonexistent.safetensors"],
     "cannot read behaviour policy"),
])
def test_bad_generate_arguments(args, needle, capsys):
    assert main(["data", "generate", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def _quiet(line):
    pass


def _replay_each_env(ds, env_id, seed, n_envs):
    """Check that the episodes are, env by env, what one environment reset with seed + i (then
    unseeded) gives for the recorded actions, and that every episode is one of them."""
    by_start = {e.observations[0].tobytes(): e for e in ds.episodes}
    assert len(by_start) == len(ds.episodes)  # Hopper's resets are noisy: no two start alike
    for i in range(n_envs):
        env = make_env(env_id)
        obs, _ = env.reset(seed=seed + i)
        while (e := by_start.pop(obs.astype(np.float32).tobytes(), None)) is not None:
            for t, a in enumerate(e.actions):
                assert np.array_equal(obs.astype(np.float32), e.observations[t])
                obs, r, term, trunc, _ = env.step(a)
                assert np.float32(r) == e.rewards[t]
                assert not (term or trunc) or t == len(e) - 1
            assert np.array_equal(np.asarray(e.final_observation, np.float32), obs.astype(np.float32))
            if not (term or trunc):
                assert e.truncated and not e.terminated  # cut by the budget: this env's stream ends
                break
            assert (e.terminated, e.truncated) == (bool(term), not term)
            obs, _ = env.reset()
        env.close()
    assert not by_start  # every episode belongs to one env's stream


def test_vector_collection_keeps_each_env_and_the_behaviour_distribution():
    """10 environments stepped together record what one environment would, with the same policy:
    each env's stream is a seeded single env's, the actions are the behaviour policy's samples at
    the recorded states, and the returns agree with those of one env."""
    policy = BehaviourPolicy.load(ASSETS / "hopper_medium.safetensors")
    w = policy._w64()

    def noise(ds):
        # The policy's Gaussian noise behind each recorded action: N(0, 1) when the actions are
        # its samples at those states (a row out of step would widen it several times).
        o = np.concatenate([e.observations for e in ds.episodes]).astype(np.float64)
        a = np.concatenate([e.actions for e in ds.episodes]).astype(np.float64)
        h = o
        for k in (0, 2):
            h = np.maximum(h @ w[f"latent_pi.{k}.weight"].T + w[f"latent_pi.{k}.bias"], 0.0)
        mu = h @ w["mu.weight"].T + w["mu.bias"]
        std = np.exp(np.clip(h @ w["log_std.weight"].T + w["log_std.bias"], -20, 2))
        keep = np.abs(a) < 0.9999  # float32 tanh saturates: the noise is not recoverable there
        return ((np.arctanh(np.clip(a, -0.9999, 0.9999)) - mu) / std)[keep]

    whole = {}
    for n_envs in (1, 10):
        ds = collect("Hopper-v5", 6000, 1, policy, n_envs=n_envs, log=_quiet)
        assert ds.n_transitions == 6000
        if n_envs == 10:
            _replay_each_env(ds, "Hopper-v5", 1, n_envs)
        z = noise(ds)
        assert len(z) > 0.98 * 3 * 6000 and abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
        whole[n_envs] = np.array([e.ret for e in ds.episodes if e.terminated or len(e) == 1000])
        assert len(whole[n_envs]) >= 8
    # The returns of whole episodes (about 1350 +- 380): the means within 3 standard errors.
    a, b = whole[1], whole[10]
    assert abs(a.mean() - b.mean()) < 3 * np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert 1000 < b.mean() < 1800


def test_the_policy_records_on_one_blas_thread(monkeypatch):
    """A second BLAS thread spins between the policy's tiny products and, beside a busy core,
    made recording six times slower; collect asks for one, and gives the count back."""
    from threadpoolctl import threadpool_info

    seen = []
    policy = BehaviourPolicy.load(ASSETS / "hopper_medium.safetensors")
    act = policy.act
    monkeypatch.setattr(policy, "act", lambda obs, rng: seen.extend(
        p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas") or act(obs, rng))
    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    collect("Hopper-v5", 50, 0, policy, n_envs=2, log=_quiet)
    assert seen and set(seen) == {1}
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == before
