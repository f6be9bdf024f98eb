"""A run directory written by an earlier version of odt (tests/fixtures/run-vidt-ensemble: ViDT,
an ensemble of two, critic warm-up, rollback and target clip; checkpoints in that version's
layout) evaluates, resumes and extends under this one with the numbers that version computed.

The expected outputs (tests/fixtures/run-vidt-ensemble-expected) were written by the version that
wrote the run: `odt eval --run DIR --episodes 3 --seed 5 --threads 1`, and
`odt run --extend DIR --online-steps 1200 --out NEW`; a resume (of the run with its summary.json
removed, from its round-6 checkpoint) rewrites the last two rounds' rows as they were. That version
ran on another CPU kind, whose matrix kernels round differently: numbers compare to a tolerance
(helpers.assert_metrics_match), while the run's own copy is compared byte for byte."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_line_matches, assert_metrics_match

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
    assert_line_matches(out.stdout.strip().splitlines()[-1], EXPECTED.joinpath("eval.txt").read_text().strip())


def test_an_earlier_versions_killed_run_resumes_to_the_same_metrics(tmp_path):
    run = _copy(tmp_path)
    (run / "summary.json").unlink()
    odt("run", "--resume", run)
    assert_metrics_match(run / "metrics.jsonl", FIXTURE / "metrics.jsonl")
    assert (run / "summary.json").is_file()


def test_an_earlier_versions_run_extends_to_the_same_metrics(tmp_path):
    run = _copy(tmp_path)
    odt("run", "--extend", run, "--online-steps", 1200, "--out", tmp_path / "longer")
    assert_metrics_match(tmp_path / "longer" / "metrics.jsonl", EXPECTED / "extend-metrics.jsonl")
    assert (run / "metrics.jsonl").read_bytes() == (FIXTURE / "metrics.jsonl").read_bytes()  # the original stays


def test_the_tolerance_passes_rounding_and_catches_a_change(tmp_path):
    rows = EXPECTED.joinpath("extend-metrics.jsonl").read_text().splitlines()
    first = json.loads(rows[0])
    def written(**changes):
        path = tmp_path / f"m{len(list(tmp_path.iterdir()))}.jsonl"
        path.write_text("\n".join([json.dumps({**first, **changes}), *rows[1:]]) + "\n")
        return path
    assert_metrics_match(written(mse=first["mse"] * (1 + 2e-6)), EXPECTED / "extend-metrics.jsonl")
    for change in ({"mse": first["mse"] * 1.001}, {"updates": 2}, {"phase": "online"}, {"extra": 1.0}):
        with pytest.raises(AssertionError):
            assert_metrics_match(written(**change), EXPECTED / "extend-metrics.jsonl")
    assert_line_matches("return 21.4 +- 0.0845", "return 21.3 +- 0.0846")
    with pytest.raises(AssertionError):
        assert_line_matches("return 21.5 +- 0.0846", "return 21.3 +- 0.0846")
