"""`odt run --dataset none`: online training from scratch, seeded by random-policy episodes."""
import json

import numpy as np
import torch

from odt.cli import main
from odt.data.generate import collect

TINY = ["--preset", "cpu-small", "--embed-dim", "32", "--n-layer", "1", "--batch-size", "8", "--online-steps", "120",
        "--updates-per-round", "4", "--eval-every", "1", "--eval-episodes", "2", "--threads", "1",
        "--episodes-per-round", "2", "--no-progress", "--finetune-lr", "1e-3", "--warmup-steps", "1"]


def test_run_from_scratch_seeds_the_buffer_with_random_episodes_and_trains_online(tmp_path):
    out = tmp_path / "run"
    assert main(["run", *TINY, "--dataset", "none", "--random-episodes", "6", "--seed", "3", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "none"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r["phase"] == "pretrain" and "loss" in r]  # nothing to pretrain on
    rounds = [r for r in rows if r.get("event") == "round"]
    assert rounds and rounds[-1]["online_steps"] >= 120 and rounds[-1]["updates"] == 4 * len(rounds)
    # The buffer starts with exactly the 6 random episodes, then grows by 2 per round.
    assert rounds[0]["buffer_trajectories"] == 6 + 2
    # Observation statistics are those of the random episodes, which the same seed reproduces.
    random = collect("Hopper-v5", 10**9, 3, None, n_envs=1, log=lambda line: None, episodes_wanted=6)
    assert len(random.episodes) == 6
    ckpt = torch.load(out / "checkpoints" / "final.pt", weights_only=True)
    obs = np.concatenate([e.observations for e in random.episodes])
    np.testing.assert_allclose(ckpt["scaling"]["obs_mean"].numpy(), obs.mean(0), rtol=1e-4, atol=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["offline"]["updates"] == 0 and summary["final"]["online_steps"] >= 120


def test_pretrain_from_no_data_is_refused(tmp_path, capsys):
    assert main(["pretrain", *TINY, "--dataset", "none", "--out", str(tmp_path / "run")]) == 2
    assert "--dataset none" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_updates_per_step_sizes_each_round_by_the_steps_it_collected(tmp_path):
    out = tmp_path / "run"
    assert main(["run", *TINY, "--dataset", "none", "--random-episodes", "4", "--seed", "1", "--out", str(out),
                 "--updates-per-step", "0.1"]) == 0
    rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in rounds if r.get("event") == "round"]
    steps = np.diff([0] + [r["online_steps"] for r in rounds])
    updates = np.diff([0] + [r["updates"] for r in rounds])
    # Random-policy Hopper episodes are 10-40 steps: --updates-per-round's 4 would not match these.
    assert (updates == np.maximum(1, np.round(steps * 0.1))).all() and len(set(updates.tolist())) > 1


def test_negative_updates_per_step_is_refused(tmp_path, capsys):
    assert main(["run", *TINY, "--dataset", "none", "--updates-per-step", "-1", "--out", str(tmp_path / "r")]) == 2
    assert "--updates-per-step" in capsys.readouterr().err and not (tmp_path / "r").exists()
