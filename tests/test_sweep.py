"""`odt sweep`: a real sweep of tiny reward-hill runs on a local Ray instance (skipping, resuming,
retrying and reporting), and bad grids refused with one line before Ray starts."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from odt.cli import main
from odt.config import Config, preset
from odt.sweep import SweepArgs, gpu_share, plan

TINY = ["--pretrain-updates", "20", "--online-steps", "60", "--eval-every", "2", "--checkpoint-every", "4",
        "--updates-per-round", "5"]
GOOD = ["reward-hill_env=odt-RewardHill-v0_s0", "reward-hill_env=odt-RewardHill-v0_s1"]
BAD = ["reward-hill_env=Hopper-v5_s0", "reward-hill_env=Hopper-v5_s1"]  # the preset's max-ep-len is 10


def odt(*args):
    return subprocess.run([sys.executable, "-m", "odt.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One grid, run twice: the first time from scratch, the second after a run lost its summary.
    Two of its four points fail at run time (Hopper-v5 episodes do not fit the preset)."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    cmd = ["sweep", "--preset", "reward-hill", "--set", "env=odt/RewardHill-v0,Hopper-v5", "--seeds", "0,1",
           "--out", out, "--retries", "1", "--num-cpus", "2", *TINY]
    first = odt(*cmd)
    first.manifest = json.loads((out / "sweep.json").read_text())
    state = {name: (out / name / "metrics.jsonl").read_bytes() for name in GOOD}
    mtime = (out / GOOD[0] / "summary.json").stat().st_mtime_ns
    (out / GOOD[1] / "summary.json").unlink()  # as if killed after its last checkpoint, round 4 of 6
    second = odt(*cmd)
    return out, first, second, state, mtime


@pytest.mark.slow
def test_sweep_on_local_ray(sweep, tmp_path):
    # One test, so that pytest-xdist's workers do not each run the module's sweep.
    check_ordinary_run_directories(sweep)
    check_failed_runs_are_retried_and_reported(sweep)
    check_rerun_skips_complete_runs_and_resumes_killed_ones(sweep)
    check_report_of_the_sweep(sweep, tmp_path)


def check_ordinary_run_directories(sweep):
    out, first, _, _, _ = sweep
    assert first.returncode == 1, first.stderr  # two runs failed
    assert "2/4 complete, 2 failed" in first.stdout
    for seed, name in enumerate(GOOD):
        d = out / name
        cfg = Config.load(d / "config.json")
        assert (cfg.env, cfg.seed, cfg.threads, cfg.online_steps, cfg.preset) == ("odt/RewardHill-v0", seed, 1, 60,
                                                                                 "reward-hill")
        summary = json.loads((d / "summary.json").read_text())
        assert summary["final"]["online_steps"] == 60 and summary["command"].startswith("odt run ")
        assert (d / "checkpoints" / "final.pt").is_file() and (d / "run.log").is_file()
        assert "--- odt sweep" in (d / "output.log").read_text()
    manifest = first.manifest
    assert {n: r["status"] for n, r in manifest["runs"].items()} == {**dict.fromkeys(GOOD, "done"),
                                                                     **dict.fromkeys(BAD, "failed")}
    assert manifest["grid"]["axes"]["env"] == ["odt/RewardHill-v0", "Hopper-v5"]


def check_failed_runs_are_retried_and_reported(sweep):
    out, first, _, _, _ = sweep
    for name in BAD:
        log = (out / name / "output.log").read_text()
        assert log.count("--- odt sweep") == 4  # 2 attempts in each of the two sweeps
        assert name in first.stderr
    assert "2 of 4 runs failed after 2 attempt(s)" in first.stderr
    assert "--max-ep-len" in first.stderr  # the last lines of the failed run's output


def check_rerun_skips_complete_runs_and_resumes_killed_ones(sweep):
    out, _, second, before, mtime = sweep
    assert "4 runs in" in second.stdout and "(1 complete, 1 to resume, 2 to start)" in second.stdout
    assert (out / GOOD[0] / "summary.json").stat().st_mtime_ns == mtime  # skipped, untouched
    resumed = out / GOOD[1]
    assert (resumed / "summary.json").is_file()
    assert "run --resume" in (resumed / "output.log").read_text()
    assert (resumed / "metrics.jsonl").read_bytes() == before[GOOD[1]]  # as if never stopped
    status = json.loads((out / "sweep.json").read_text())["runs"]
    assert status[GOOD[0]]["status"] == "complete" and status[GOOD[1]]["status"] == "resumed"
    assert len(json.loads((out / "sweep.json").read_text())["commands"]) == 2


def check_report_of_the_sweep(sweep, tmp_path):
    out = sweep[0]
    p = odt("report", out, "--out", tmp_path / "r", "--reps", "200")
    assert p.returncode == 0, p.stderr
    numbers = json.loads((tmp_path / "r" / "report.json").read_text())
    # The failed runs stopped before writing config.json: they are not run directories.
    assert len(numbers["runs"]) == 2 and numbers["incomplete"] == []
    assert numbers["aggregate_unit"] == "return"  # the reward hill has no normalized reference
    assert numbers["table"][0]["runs"] == 2 and "raw returns" in (tmp_path / "r" / "report.md").read_text()


def test_paper_group_expands_to_the_papers_gym_grid(tmp_path):
    _, _, points = plan(SweepArgs(out=tmp_path / "paper", group="paper-gym"), [])
    assert len(points) == 8 * 5 and len({p.name for p in points}) == 40
    assert points[0].name == "hopper-medium_s0" and all("--download" in p.args for p in points)
    assert {p.args[p.args.index("--preset") + 1] for p in points} >= {"walker2d-medium-replay", "ant-medium"}


def test_grid_file_and_command_line_combine(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text('preset = ["cpu-small"]\nseeds = [0, 1, 2]\nargs = ["--online-steps", "100"]\n'
                    '[set]\nlr = [1e-4, 1e-3]\n')
    _, _, points = plan(SweepArgs(out=tmp_path / "s", grid=grid, seeds="5", set=["batch_size=8,16"],
                                  cpus_per_run=2), ["--eval-episodes", "2"])
    assert [p.name for p in points] == [f"cpu-small_lr={lr}_batch-size={b}_s5" for lr in ("0.0001", "0.001")
                                        for b in (8, 16)]
    args = points[-1].args
    assert args[:4] == ["--online-steps", "100", "--eval-episodes", "2"]
    assert args[args.index("--threads") + 1] == "2" and args[args.index("--lr") + 1] == "0.001"


@pytest.mark.parametrize("args,needle", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--preset", "reward-hill", "--set", "nokey=1,2"], "Unrecognized options: --nokey"),
    (["--set", "lr"], "give KEY=V1,V2"),
    (["--set", "lr=1e-3,-1"], "grid point lr=-1"),
    (["--seeds", "1,,2"], "empty value"),
    (["--seeds", "1,x"], "Error parsing --seed"),
    (["--set", "seed=1,2"], "--seeds"),
    (["--group", "nope"], "unknown sweep group"),
    (["--resume", "somewhere"], "sweep's to set"),
    (["--overwrite"], "sweep's to set"),
    (["--cpus-per-run", "0"], "--cpus-per-run must be positive"),
    (["--set", "lr=1e-3,1e-4", "--lr", "0.1"], "--lr is given both as a flag and as an axis"),
    (["--grid", "GRID"], "unknown key(s) presets"),
    (["--grid", "/nonexistent.toml"], "cannot read grid file"),
    (["--preset", "reward-hill", "--seeds", "0"], "holds a run with other settings (lr"),
    (["--preset", "reward-hill", "--seeds", "1"], "not a run directory"),
])
def test_bad_grid_one_line_exit_2_before_ray(args, needle, tmp_path, capsys):
    out = tmp_path / "s"
    if "GRID" in args:
        (tmp_path / "g.toml").write_text('presets = ["cpu-small"]\n')
        args = [str(tmp_path / "g.toml") if a == "GRID" else a for a in args]
    if "holds" in needle:
        (out / "reward-hill_s0").mkdir(parents=True)
        cfg = preset("reward-hill")
        cfg.preset, cfg.threads, cfg.lr = "reward-hill", 1, 0.5
        cfg.save(out / "reward-hill_s0" / "config.json")
    if "not a run" in needle:
        (out / "reward-hill_s1").mkdir(parents=True)
        (out / "reward-hill_s1" / "notes.txt").write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    assert main(["sweep", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.startswith("odt: error: ") and len(err.strip().splitlines()) == 1, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["sweep", "--out", str(tmp_path / "f"), "--preset", "reward-hill"]) == 2
    assert "is a file" in capsys.readouterr().err


@pytest.mark.parametrize("have,cpus,given,share", [
    ({"CPU": 16, "GPU": 1}, 1.0, None, 1 / 16),  # 16 runs at once share the GPU, each counted
    ({"CPU": 16, "GPU": 2}, 2.0, None, 2 / 8),
    ({"CPU": 3, "GPU": 1}, 1.0, None, 0.3333),  # Ray's steps of 1e-4, rounded down: three fit
    ({"CPU": 4, "GPU": 8}, 1.0, None, 1.0),  # a run uses one GPU
    ({"CPU": 2}, 1.0, None, 0.0),  # no GPU: none reserved
    ({"CPU": 16, "GPU": 1}, 1.0, 0.5, 0.5),  # given: as given
])
def test_runs_share_the_gpus_equally_unless_told(have, cpus, given, share):
    a = SweepArgs(out=Path("x"), cpus_per_run=cpus, gpus_per_run=given)
    assert gpu_share(a, have) == pytest.approx(share, abs=1e-12)
    assert share * (have.get("CPU", 0) // cpus) <= have.get("GPU", 0) + 1e-9 or given is not None
