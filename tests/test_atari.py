"""Atari end to end: the DT paper's frames (ALE, 4 stacked 84x84 greyscale) read by its
convolutional encoder, chosen by the observation space; a dataset recorded with Minari's own
collector loads, and a tiny run pretrains, finetunes a round and evaluates."""
import numpy as np
import pytest
import torch

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

import gymnasium as gym  # noqa: E402

from odt.cli import main  # noqa: E402
from odt.data.sources import load_dataset  # noqa: E402
from odt.data.trajectories import Episode  # noqa: E402
from odt.envs.make import atari_env, make_env  # noqa: E402
from odt.models.transformer import DecisionTransformer, FrameEncoder, ModelSpec  # noqa: E402
from helpers import make_buffer  # noqa: E402

GAME = "ALE/Breakout-v5"
# The game cut at 50 steps: a policy that never fires would play on to ALE's 27k-step limit.
SHORT = "odt-test/BreakoutShort-v0"
if SHORT not in gym.registry:
    gym.register(SHORT, lambda: gym.wrappers.TimeLimit(atari_env(GAME), 50))


def test_an_atari_game_comes_as_the_dt_papers_frames():
    env = make_env(GAME)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n == 4
    env.close()


def test_frames_take_the_convolutional_encoder_by_their_shape():
    flat = DecisionTransformer(ModelSpec(obs_dim=11, act_dim=3, embed_dim=16, n_layer=1, n_head=1))
    frames = DecisionTransformer(ModelSpec(obs_dim=4 * 84 * 84, act_dim=4, embed_dim=16, n_layer=1, n_head=1,
                                           frames=(4, 84, 84), action_head="categorical"))
    assert isinstance(flat.embed_state, torch.nn.Linear) and isinstance(frames.embed_state, FrameEncoder)
    convs = [m for m in frames.embed_state.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(32, (8, 8), (4, 4)), (64, (4, 4), (2, 2)),
                                                                            (64, (3, 3), (1, 1))]
    x = torch.rand(2, 3, 4 * 84 * 84)
    out = frames.hidden(torch.zeros(2, 3, 1), x, torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))
    assert out.shape == (2, 3, 16)


def test_the_buffer_keeps_frames_as_bytes_and_draws_them_in_zero_one():
    rng = np.random.default_rng(0)
    width = 4 * 84 * 84
    episodes = [Episode(rng.integers(0, 256, (6, width), dtype=np.uint8), np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1]],
                        np.ones(6, np.float32), terminated=True) for _ in range(3)]
    buf = make_buffer(10, obs_dim=width, act_dim=4, obs_mean=np.zeros(width), obs_std=np.full(width, 255.0))
    buf.fill(episodes)
    p = buf._pack()
    assert p["frames"].dtype == torch.uint8 and "states" not in buf.columns
    windows, mask, frames = buf.draw(8, 4, np.random.default_rng(1))
    assert frames.shape == (8, 4, width) and 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0
    assert torch.equal(frames[mask == 0], torch.zeros_like(frames[mask == 0]))  # padding, masked
    batch = buf.sample(8, 4, np.random.default_rng(1))
    assert torch.equal(batch.states, frames)


def test_a_minari_atari_dataset_loads_and_a_tiny_run_learns_from_it(tmp_path, monkeypatch, capsys):
    """The dataset is written by Minari's own API (``create_dataset_from_buffers``, the layout of
    its Atari datasets: each episode's frames, (T + 1, 4, 84, 84) bytes, and action indices),
    from episodes of the game as odt makes it."""
    minari = pytest.importorskip("minari")
    from minari.data_collector.episode_buffer import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env = gym.wrappers.TimeLimit(atari_env(GAME), 40)
    rng = np.random.default_rng(0)
    buffers = []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        frames, actions, rewards, done = [obs], [], [], False
        while not done:
            actions.append(int(rng.integers(4)))
            obs, r, term, trunc, _ = env.step(actions[-1])
            frames.append(obs)
            rewards.append(r)
            done = term or trunc
        last = np.arange(len(actions)) == len(actions) - 1
        buffers.append(EpisodeBuffer(id=seed, observations=np.stack(frames), actions=np.array(actions),
                                     rewards=np.array(rewards), terminations=last & term, truncations=last & trunc,
                                     infos={}))
    minari.create_dataset_from_buffers("atari/breakout-test-v0", buffers, env=GAME,
                                       observation_space=env.observation_space, action_space=env.action_space,
                                       algorithm_name="random")
    env.close()
    ds = load_dataset("atari/breakout-test-v0")
    first = ds.episodes[0]
    assert first.observations.dtype == np.uint8 and ds.obs_dim == 4 * 84 * 84 and ds.act_dim == 1
    assert len(first) == 40 and first.final_observation.shape == (4 * 84 * 84,)
    out = tmp_path / "run"
    assert main(["run", "--env", SHORT, "--dataset", "atari/breakout-test-v0", "--preset", "atari-breakout",
                 "--embed-dim", "16", "--n-layer", "1", "--n-head", "1", "--batch-size", "4", "--context-len", "4",
                 "--eval-context", "4", "--pretrain-updates", "4", "--online-steps", "60", "--updates-per-round", "2",
                 "--eval-episodes", "1", "--eval-every", "1", "--max-ep-len", "1000", "--threads", "1",
                 "--no-progress", "--out", str(out)]) == 0
    import json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["online_steps"] == 60 and "return_mean" in summary["final"]
    state = torch.load(out / "checkpoints" / "final.pt", weights_only=True)
    assert tuple(state["spec"]["frames"]) == (4, 84, 84) and state["spec"]["action_head"] == "categorical"
    assert main(["eval", "--run", str(out), "--episodes", "1"]) == 0


def test_frames_refuse_what_reads_flat_observations(tmp_path, capsys):
    assert main(["run", "--env", GAME, "--algo", "vidt", "--dataset", "none", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "critics read flat observations" in err and "\n" not in err and not (tmp_path / "r").exists()
