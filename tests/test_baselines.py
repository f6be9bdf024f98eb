"""`odt baseline sac|iql`: ordinary run directories that `odt report` tables beside ODT, and
baselines that learn what their algorithms learn."""
import json
import tempfile

import numpy as np
import pytest

from odt.baselines import Transitions
from odt.cli import main
from odt.data.formats import save_npz
from odt.data.trajectories import Episode
from odt.data.embedded import reward_hill_dataset

pytest.importorskip("stable_baselines3")
pytest.importorskip("torchrl")

SMALL = ["--baseline-hidden", "64", "--baseline-batch-size", "64", "--threads", "1", "--no-progress"]


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_sac_from_scratch_climbs_the_reward_hill(tmp_path, monkeypatch):
    # One-step episodes, reward (a + 1)^2 up to a = 0 and 1 - 2a after: SAC must find the peak.
    out = tmp_path / "sac"
    # ... and leaves no SB3 logger folder (SB3-<date>) in the temp dir, without the suite's net.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    assert main(["baseline", "sac", "--preset", "reward-hill", *SMALL, "--online-steps", "1500",
                 "--sac-learning-starts", "200", "--baseline-evals", "3", "--eval-episodes", "5", "--out", str(out)]) == 0
    s = _summary(out)
    assert s["algo"] == "sac" and s["online_steps"] == 1500 and s["updates"] > 1000
    assert s["final"]["return_mean"] > 0.8 > s["offline"]["return_mean"]
    assert list(tmp.iterdir()) == []


def test_iql_weights_the_data_toward_its_best_actions(tmp_path):
    # Actions uniform on the rising side [-1, 0]: behaviour cloning acts at their mean, -0.5
    # (return 0.25); IQL's advantage weighting moves toward the best of them, a = 0 (return 1).
    data = tmp_path / "hill.npz"
    save_npz(reward_hill_dataset(seed=1, n_left=400, n_right=0, left=(-1.0, 0.0)), data)
    out = tmp_path / "iql"
    assert main(["baseline", "iql", "--preset", "reward-hill", *SMALL, "--dataset", str(data), "--online-steps", "0",
                 "--iql-offline-updates", "1500", "--eval-episodes", "5", "--out", str(out)]) == 0
    s = _summary(out)
    assert s["updates"] == 1500 and s["offline"]["return_mean"] > 0.6


def test_transitions_pair_each_step_with_its_successor():
    o = np.arange(8, dtype=np.float32).reshape(4, 2)
    a = np.zeros((4, 1), np.float32)
    r = np.array([1, 2, 3, 4], np.float32)
    ended = Episode(o, a, r, terminated=True, final_observation=np.array([9, 9], np.float32))
    cut = Episode(o, a, r, truncated=True, final_observation=None)  # no s_{T+1}: its last step is dropped
    t = Transitions(16, 2, 1)
    assert t.add_episodes([ended, cut]) == 7
    np.testing.assert_array_equal(t.next_obs[:4], [[2, 3], [4, 5], [6, 7], [9, 9]])
    np.testing.assert_array_equal(t.term[:7], [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(t.next_obs[4:7], o[1:])
    # A terminal step needs no successor (it does not bootstrap): kept, terminal, even alone.
    fell = Episode(o[:1], a[:1], r[:1], terminated=True, final_observation=None)
    assert t.add_episodes([fell]) == 8 and t.term[7]


@pytest.mark.slow
def test_baselines_and_odt_share_one_report(tmp_path, hopper_npz):
    common = ["--preset", "cpu-small", "--dataset", str(hopper_npz), "--online-steps", "300", "--eval-episodes", "2",
              "--threads", "1", "--no-progress"]
    for algo, flags in [("sac", ["--sac-learning-starts", "100", "--baseline-evals", "3", "--baseline-hidden", "64",
                                 "--baseline-batch-size", "64"]),
                        ("iql", ["--iql-offline-updates", "50", "--baseline-evals", "3", "--baseline-hidden", "64"])]:
        assert main(["baseline", algo, *common, *flags, "--out", str(tmp_path / "runs" / algo)]) == 0
        rows = [json.loads(x) for x in (tmp_path / "runs" / algo / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in rows if r.get("event") == "eval"]
        assert [r["online_steps"] for r in evals] == [0, 100, 200, 300]
        assert {"eval_return_mean", "eval_normalized_mean", "eval_episodes", "updates"} <= set(evals[-1])
    assert main(["run", *common, "--embed-dim", "32", "--n-layer", "1", "--batch-size", "8", "--pretrain-updates", "4",
                 "--updates-per-round", "2", "--eval-every", "1", "--episodes-per-round", "1",
                 "--out", str(tmp_path / "runs" / "odt")]) == 0
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--reps", "50"]) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    for algo in ("sac", "iql", "odt"):
        assert f"| {algo} " in table or f"| {algo}|" in table, table[:2000]


def test_baseline_errors_are_one_line_and_early(tmp_path, capsys):
    assert main(["baseline", "ppo"]) == 2
    assert main(["pretrain", "--algo", "sac", "--dataset", str(tmp_path / "missing.npz")]) == 2
    assert main(["baseline", "iql", "--dataset", "none", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "sac|iql" in err[0] and "odt baseline sac" in err[1] and "offline data" in err[2]
    assert not (tmp_path / "x").exists()
