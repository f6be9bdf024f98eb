"""A run directory written by an earlier version of odt (tests/fixtures/run-vidt-ensemble: ViDT,
an ensemble of two, critic warm-up, rollback and target clip; checkpoints in that version's
layout) evaluates, resumes and extends under this one with the numbers that version computed.

The expected outputs (tests/fixtures/run-vidt-ensemble-expected) were written by the version that
wrote the run: `odt eval --run DIR --episodes 3 --seed 5 --threads 1`, and
`odt run --extend DIR --online-steps 1200 --out NEW`; a resume (of the run with its summary.json
removed, from its round-6 checkpoint) rewrites the last two rounds' rows as they were."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "run-vidt-ensemble"
EXPECTED = Path(__file__).parent / "fixtures" / "run-vidt-ensemble-expected"


def odt(*args):
    p = subprocess.run([sys.executable, "-m", "odt.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def _copy(tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def test_an_earlier_versions_run_evaluates_to_the_same_returns(tmp_path):
    run = _copy(tmp_path)
    out = odt("eval", "--run", run, "--episodes", 3, "--seed", 5, "--threads", 1)
    assert out.stdout.strip().splitlines()[-1] == EXPECTED.joinpath("eval.txt").read_text().strip()


def test_an_earlier_versions_killed_run_resumes_to_the_same_metrics(tmp_path):
    run = _copy(tmp_path)
    (run / "summary.json").unlink()
    odt("run", "--resume", run)
    assert (run / "metrics.jsonl").read_bytes() == (FIXTURE / "metrics.jsonl").read_bytes()
    assert (run / "summary.json").is_file()


def test_an_earlier_versions_run_extends_to_the_same_metrics(tmp_path):
    run = _copy(tmp_path)
    odt("run", "--extend", run, "--online-steps", 1200, "--out", tmp_path / "longer")
    assert (tmp_path / "longer" / "metrics.jsonl").read_bytes() == EXPECTED.joinpath("extend-metrics.jsonl").read_bytes()
    assert (run / "metrics.jsonl").read_bytes() == (FIXTURE / "metrics.jsonl").read_bytes()  # the original stays
