"""`odt report` on run directories written in odt's format, checked against numbers computed here
by other formulas (scipy's trimmed mean, the optimality gap by its definition)."""
import csv
import json

import numpy as np
import pytest
import scipy.stats

from odt.cli import main
from odt.config import Config

# Normalized scores by task, setting (lr), seed: (offline, online).
HOPPER = ("Hopper-v5", "odt/hopper-medium")
WALKER = ("Walker2d-v5", "mujoco/walker2d/medium-v0")
SCORES = {
    (HOPPER, 1e-3): {0: (50.0, 60.0), 1: (40.0, 70.0), 2: (55.0, 58.0)},
    (WALKER, 1e-3): {0: (70.0, 110.0), 1: (20.0, 90.0), 2: (65.0, 64.0)},
    (HOPPER, 1e-4): {0: (10.0, 12.0), 1: (14.0, 15.0), 2: (9.0, 30.0)},
    (WALKER, 1e-4): {0: (30.0, 31.0), 1: (33.0, 36.0), 2: (35.0, 20.0)},
}
HILL = ("odt/RewardHill-v0", "odt/reward-hill")  # no normalized reference: raw returns
HILL_RETURNS = {0: (0.5, 0.9), 1: (0.7, 0.8)}
BUDGET = 300


def write_run(path, task, seed, offline, online, lr=1e-3, normalized=True):
    """A run directory as `odt run` leaves it: config.json from Config, summary.json and the eval
    rows of metrics.jsonl with the keys train.py writes."""
    path.mkdir(parents=True)
    cfg = Config(env=task[0], dataset=task[1], seed=seed, lr=lr, out=path, online_steps=BUDGET)
    cfg.save(path / "config.json")

    def returns(score):
        s = {"return_mean": 30.0 * score + 5, "return_std": 1.0}
        if normalized:
            s.update(normalized_mean=score, normalized_std=0.5)
        return s

    def evaluation(phase, score, steps, updates):
        return {"phase": phase, "event": "eval", "updates": updates, "online_steps": steps,
                **{f"eval_{k}": v for k, v in returns(score).items()}, "eval_length_mean": 100.0,
                "eval_episodes": 5}

    rows = [{"phase": "pretrain", "updates": 100, "online_steps": 0, "loss": 0.1},
            evaluation("pretrain", offline, 0, 100)]
    for i, steps in enumerate((100, 200, BUDGET)):  # a straight line from offline to online
        rows.append({"phase": "online", "event": "round", "round": i + 1, "updates": 110 + 10 * i,
                     "online_steps": steps})
        rows.append(evaluation("online", offline + (online - offline) * steps / BUDGET, steps, 110 + 10 * i))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"offline": {"updates": 100, "online_steps": 0, **returns(offline)},
               "final": {"updates": 130, "online_steps": BUDGET, **returns(online)}, "env": task[0],
               "dataset": task[1], "algo": "odt", "seed": seed, "updates": 130, "online_steps": BUDGET,
               "wall_time_s": 1.0, "run_dir": str(path)}
    (path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    for (task, lr), by_seed in SCORES.items():
        for seed, (off, on) in by_seed.items():
            write_run(root / f"{task[0]}-lr{lr}-s{seed}", task, seed, off, on, lr=lr)
    for seed, (off, on) in HILL_RETURNS.items():
        write_run(root / "hill" / f"s{seed}", HILL, seed, off, on, normalized=False)
    (root / "killed").mkdir()
    Config(seed=9).save(root / "killed" / "config.json")  # no summary.json: left out, and said so
    return root


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "r"
    assert main(["report", str(runs), "--out", str(out), "--reps", "500", "--online-evals", "1"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_table_matches_hand_computed_means_and_deltas(report):
    out, numbers = report
    rows = {(r["env"], r["dataset"], r["setting"]): r for r in numbers["table"]}
    assert numbers["setting_keys"] == ["lr"]
    assert len(rows) == 5
    for (task, lr), by_seed in SCORES.items():
        row = rows[(*task, f"odt lr={lr}")]
        off, on = np.array(list(by_seed.values())).T
        assert row["unit"] == "normalized" and row["runs"] == 3 and row["seeds"] == [0, 1, 2]
        assert row["offline_mean"] == pytest.approx(off.mean()) and row["offline_std"] == pytest.approx(off.std())
        assert row["online_mean"] == pytest.approx(on.mean()) and row["online_std"] == pytest.approx(on.std())
        assert row["delta_mean"] == pytest.approx(on.mean() - off.mean())
    hill = rows[(*HILL, "odt lr=0.001")]
    assert hill["unit"] == "return"
    assert hill["online_mean"] == pytest.approx(30.0 * np.mean([0.9, 0.8]) + 5)  # raw return, said so
    with open(out / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5 and float(table[0]["offline_mean"]) == pytest.approx(numbers["table"][0]["offline_mean"])
    md = (out / "report.md").read_text()
    assert "| offline | online | delta |" in md and "no normalized reference" in md
    assert "Settings are labelled by the algorithm and the keys that vary: lr; seeds are the replicates." in md
    assert "1 incomplete run(s) left out" in md and "killed" in md


def test_iqm_and_optimality_gap_match_their_definitions(report):
    _, numbers = report
    assert numbers["aggregate_unit"] == "normalized" and len(numbers["aggregate_tasks"]) == 2  # the hill is raw
    aggs = {(a["setting"], a["phase"]): a for a in numbers["aggregates"]}
    for lr in (1e-3, 1e-4):
        for phase, i in (("offline", 0), ("online", 1)):
            x = np.array([v[i] for (t, l), by_seed in SCORES.items() if l == lr for v in by_seed.values()])
            a = aggs[(f"odt lr={lr}", phase)]
            assert (a["runs_per_task"], a["tasks"]) == (3, 2)
            assert a["iqm"] == pytest.approx(scipy.stats.trim_mean(x, 0.25))
            assert a["mean"] == pytest.approx(x.mean())
            assert a["optimality_gap"] == pytest.approx(np.mean(np.maximum(100.0 - x, 0.0)))
            for key in ("iqm", "mean", "optimality_gap"):
                lo, hi = a[f"{key}_ci"]
                assert lo <= a[key] <= hi and lo < hi


def test_curves_profiles_and_files(report):
    out, numbers = report
    for name in ("report.md", "table.csv", "aggregates.csv", "report.json", "learning_curves.png",
                 "performance_profile.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    per_task = {(tuple(c["task"]), c["setting"]): c for c in numbers["curves"] if c["task"]}
    c = per_task[(HOPPER, "odt lr=0.001")]
    assert c["online_steps"][0] == 0 and c["online_steps"][-1] == BUDGET
    offline, online = np.array(list(SCORES[(HOPPER, 1e-3)].values())).T
    assert c["mean"][0] == pytest.approx(offline.mean()) and c["mean"][-1] == pytest.approx(online.mean())
    assert all(lo <= m <= hi for lo, m, hi in zip(c["ci_low"], c["mean"], c["ci_high"]))
    agg = [c for c in numbers["curves"] if c["task"] is None and c["setting"] == "odt lr=0.001"][0]
    x0 = [v[0] for (t, lr), by in SCORES.items() if lr == 1e-3 for v in by.values()]
    assert agg["iqm"][0] == pytest.approx(scipy.stats.trim_mean(x0, 0.25))
    prof = numbers["performance_profiles"]["odt lr=0.001 online"]["profile"]
    taus = numbers["performance_profiles"]["tau"]
    x = [v[1] for (t, lr), by in SCORES.items() if lr == 1e-3 for v in by.values()]
    assert prof[0] == pytest.approx(np.mean(np.array(x) > taus[0]))
    assert prof[50] == pytest.approx(np.mean(np.array(x) > taus[50]))


def test_same_seed_same_report(runs, report, tmp_path):
    out, numbers = report
    assert main(["report", str(runs), "--out", str(tmp_path / "again"), "--reps", "500", "--online-evals", "1"]) == 0
    assert json.loads((tmp_path / "again" / "report.json").read_text())["aggregates"] == numbers["aggregates"]


@pytest.mark.parametrize("case,needle", [
    ("empty", "no run directory"),
    ("missing", "is not a directory"),
    ("out_is_file", "is a file"),
    ("out_not_empty", "--overwrite"),
    ("only_incomplete", "incomplete run(s)"),
])
def test_bad_input_one_line_exit_2(case, needle, runs, tmp_path, capsys):
    src, out = tmp_path / "empty", tmp_path / "out"
    src.mkdir()
    if case == "missing":
        src = tmp_path / "nope"
    elif case in ("out_is_file", "out_not_empty"):
        src = runs
        if case == "out_is_file":
            out.write_text("x")
        else:
            out.mkdir()
            (out / "keep.txt").write_text("keep me")
    elif case == "only_incomplete":
        src = runs / "killed"
    capsys.readouterr()
    assert main(["report", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1 and err.startswith("odt: error: ")
    if case == "out_not_empty":
        assert (out / "keep.txt").read_text() == "keep me"
        assert main(["report", str(src), "--out", str(out), "--overwrite", "--reps", "50"]) == 0
    elif case != "out_is_file":
        assert not out.exists()


def test_online_score_is_the_mean_of_the_last_evaluations_and_deltas_aggregate(runs, tmp_path):
    out = tmp_path / "last3"
    assert main(["report", str(runs), "--out", str(out), "--reps", "500", "--online-evals", "2"]) == 0
    numbers = json.loads((out / "report.json").read_text())
    # Each run's online evaluations lie on a line from offline to online at 1/3, 2/3 and 3/3 of
    # the budget: the last two average to offline + (online - offline) * 5/6.
    for r in numbers["runs"]:
        if not r["normalized"]:
            continue
        task = HOPPER if r["env"] == "Hopper-v5" else WALKER
        lr = 1e-3 if "lr=0.001" in r["setting"] else 1e-4
        off, on = SCORES[(task, lr)][r["seed"]]
        assert r["online"] == pytest.approx(off + (on - off) * 5 / 6)
        assert r["delta"] == pytest.approx((on - off) * 5 / 6)
    for a in numbers["aggregates"]:
        if a["phase"] != "delta":
            continue
        lr = 1e-3 if "lr=0.001" in a["setting"] else 1e-4
        deltas = np.array([[(on - off) * 5 / 6 for on_off in [SCORES[(t, lr)][s]] for off, on in [on_off]]
                           for s in range(3) for t in [HOPPER, WALKER]]).ravel()
        assert a["mean"] == pytest.approx(deltas.mean())
        assert a["iqm"] == pytest.approx(scipy.stats.trim_mean(deltas, 0.25))
        assert a["mean_ci"][0] <= a["mean"] <= a["mean_ci"][1] and "optimality_gap" not in a
    assert "online: the mean of the last 2 evaluation(s)" in (out / "report.md").read_text()


def test_runs_of_an_older_version_without_a_newer_setting_compare_with_new_ones(tmp_path):
    from odt.report_stats import find_runs, label_settings

    for seed in (0, 1):
        write_run(tmp_path / f"s{seed}", HOPPER, seed, 50.0, 60.0)
    old = json.loads((tmp_path / "s0" / "config.json").read_text())
    del old["td_reward_shift"]  # a setting that run's version did not have: its default applies
    (tmp_path / "s0" / "config.json").write_text(json.dumps(old))
    runs, _ = find_runs([tmp_path])
    assert label_settings(runs) == [] and {r.setting for r in runs} == {"odt"}


def test_a_head_left_to_auto_and_the_same_head_named_are_one_setting(tmp_path):
    from odt.report_stats import find_runs, label_settings

    for seed, head in ((0, "auto"), (1, "tanh_gaussian"), (2, "gaussian")):
        write_run(tmp_path / f"s{seed}", HOPPER, seed, 50.0, 60.0)
        cfg = json.loads((tmp_path / f"s{seed}" / "config.json").read_text())
        (tmp_path / f"s{seed}" / "config.json").write_text(json.dumps({**cfg, "action_head": head}))
    runs, _ = find_runs([tmp_path])
    assert label_settings(runs) == ["action_head"]
    assert [r.setting for r in runs] == ["odt action_head=tanh_gaussian"] * 2 + ["odt action_head=gaussian"]


def test_differences_between_settings_match_hand_computed_means_and_improvement_probabilities(report, tmp_path, capsys):
    _, numbers = report
    diffs = {(d["env"], d["setting"], d["minus"]): d for d in numbers["differences"]}
    assert len(diffs) == 2  # one pair per normalized task; the hill has one setting
    for task in (HOPPER, WALKER):
        hi, lo = (np.array([on for _, on in SCORES[(task, lr)].values()]) for lr in (1e-3, 1e-4))
        d = diffs[(task[0], "odt lr=0.001", "odt lr=0.0001")]  # ordered so that the difference is positive
        assert d["online_difference"] == pytest.approx(hi.mean() - lo.mean())
        assert d["probability_of_improvement"] == 1.0  # every seed of one beats every seed of the other
        assert 0 < d["online_difference_ci"][0] <= d["online_difference"] <= d["online_difference_ci"][1]
        # every resample's means lie between the extremes of its seeds, and so does the interval
        assert d["online_difference_ci"][0] >= hi.min() - lo.max() - 1e-9
        assert d["online_difference_ci"][1] <= hi.max() - lo.min() + 1e-9

    # Against the better setting, with unequal seed counts (which a paired bootstrap could not
    # resample): y = [2, 0] minus x = [1, 2, 3] is 1 - 2 = -1, and P(Y > X) counts a tie as half:
    # y=2 beats 1 and ties 2; y=0 beats nothing: 1.5 / 6. A third setting has one seed: a point, no
    # interval. A second task lacks the --against setting: said, not compared.
    for lr, online in ((1e-3, (1.0, 2.0, 3.0)), (1e-4, (2.0, 0.0)), (1e-5, (9.0,))):
        for seed, on in enumerate(online):
            write_run(tmp_path / "runs" / f"lr{lr}-s{seed}", HOPPER, seed, 0.0, on, lr=lr)
    for lr in (1e-4, 1e-5):
        write_run(tmp_path / "runs" / f"walker-lr{lr}", WALKER, 0, 0.0, 5.0, lr=lr)
    out = tmp_path / "r"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out), "--reps", "500", "--online-evals", "1",
                 "--against", "odt lr=0.001"]) == 0
    numbers = json.loads((out / "report.json").read_text())
    d, one = numbers["differences"]
    assert (d["setting"], d["minus"], d["runs"], d["runs_minus"]) == ("odt lr=0.0001", "odt lr=0.001", 2, 3)
    assert d["online_difference"] == pytest.approx(1.0 - 2.0)  # against a better setting: negative
    assert d["probability_of_improvement"] == pytest.approx(1.5 / 6)
    assert d["online_difference_ci"][0] < -1.0 < d["online_difference_ci"][1]
    assert d["online_difference_ci"][0] >= 0.0 - 3.0 and d["online_difference_ci"][1] <= 2.0 - 1.0
    assert (one["setting"], one["runs"], one["online_difference"]) == ("odt lr=1e-05", 1, pytest.approx(7.0))
    assert one["online_difference_ci"] == [None, None]
    md = (out / "report.md").read_text()
    assert "| odt lr=0.0001 | odt lr=0.001 | normalized | 2 vs 3 | -1 [" in md and "| 1 vs 3 | 7 | 1.00 |" in md
    assert "Not compared: mujoco/walker2d/medium-v0 (Walker2d-v5): no online score of odt lr=0.001." in md
    assert numbers["differences_left_out"] == ["mujoco/walker2d/medium-v0 (Walker2d-v5): no online score of odt lr=0.001"]

    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "r2"), "--against", "sac"]) == 2
    err = capsys.readouterr().err
    assert "--against 'sac' is no setting" in err and "'odt lr=0.001'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r2").exists()
