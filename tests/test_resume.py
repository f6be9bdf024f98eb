"""A run killed with SIGKILL at any moment continues with --resume as if it had never stopped:
the same metrics.jsonl, the whole budget, and the same replay buffer (nothing doubled, nothing lost)."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ARGS = ["--preset", "cpu-small", "--embed-dim", "32", "--n-layer", "1", "--batch-size", "8",
        "--pretrain-updates", "40", "--online-steps", "400", "--updates-per-round", "30", "--eval-every", "2",
        "--eval-episodes", "2", "--threads", "1", "--no-progress", "--checkpoint-every", "1", "--episodes-per-round", "1"]


def _start(out, hopper_npz, algo):
    return subprocess.Popen([sys.executable, "-m", "odt.cli", "run", *ARGS, "--algo", algo, "--dataset",
                             str(hopper_npz), "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))


def _rounds(out):
    path = out / "metrics.jsonl"
    return path.read_text().count('"event": "round"') if path.is_file() else 0


def _mtime(path):
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _buffer(out):
    rs = torch.load(out / "checkpoints" / "final.pt", weights_only=True)["extra"]["resume"]
    return rs["buffer_order"].tolist(), {k: v for k, v in rs.get("online", {}).items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, hopper_npz):
    """The run that was never killed, made once per algorithm on first use: a pytest-xdist worker
    that gets only one algorithm's cases makes only that one."""
    runs = {}

    def run_of(algo):
        if algo not in runs:
            out = tmp_path_factory.mktemp("ref") / algo
            assert _start(out, hopper_npz, algo).wait(timeout=600) == 0
            runs[algo] = out
        return runs[algo]
    return run_of


@pytest.mark.slow
@pytest.mark.parametrize("algo,moment", [("odt", "between rounds"), ("odt", "mid-round"), ("vidt", "mid-round")])
def test_killed_run_resumes_exactly(algo, moment, reference, tmp_path, hopper_npz):
    out = tmp_path / "run"
    proc = _start(out, hopper_npz, algo)
    latest = out / "checkpoints" / "latest.pt"
    deadline = time.time() + 300
    if moment == "between rounds":  # right after a round's checkpoint is written
        while _rounds(out) < 3 and time.time() < deadline:
            time.sleep(0.01)
        stamp = _mtime(latest)
        while _mtime(latest) == stamp and time.time() < deadline:
            time.sleep(0.002)
    else:  # a little after a round row: inside the next round's updates or rollout
        while _rounds(out) < 3 and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "odt.cli", "run", "--resume", str(out)], capture_output=True,
                             text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    ref = reference(algo)
    assert (out / "metrics.jsonl").read_text() == (ref / "metrics.jsonl").read_text()
    summary = (out / "summary.json").read_text()
    assert '"online_steps": 400' in summary  # the budget, exactly
    order, online = _buffer(out)
    ref_order, ref_online = _buffer(ref)
    assert order == ref_order and len(set(order)) == len(order)  # no trajectory doubled or lost
    assert online.keys() == ref_online.keys() and all(torch.equal(online[k], ref_online[k]) for k in online)
    assert "resumed:" in (out / "run.log").read_text()


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    from odt.cli import main

    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "summary.json").write_text("{}")
    assert main(["finetune", "--resume", str(tmp_path)]) == 2
    assert "is complete" in capsys.readouterr().err
