"""A run killed with SIGKILL at any moment continues with --resume as if it had never stopped:
the same metrics.jsonl, the whole budget, and the same replay buffer (nothing doubled, nothing lost)."""
import json
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
    rs = torch.load(out / "checkpoints" / "final.pt", weights_only=True)["buffer"]
    return rs["order"].tolist(), {k: v for k, v in rs.get("online", {}).items()}


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


@pytest.mark.slow
def test_extend_continues_a_complete_run_in_a_copy(tmp_path, hopper_npz):
    """--extend: the original stays byte for byte; the copy carries its metrics, buffer and offline
    score on to the larger budget, counting rounds and steps on from where the run ended."""
    short = tmp_path / "short"
    run = subprocess.run([sys.executable, "-m", "odt.cli", "run", *ARGS, "--online-steps", "200", "--algo", "vidt",
                          "--dataset", str(hopper_npz), "--out", str(short)], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert run.returncode == 0, run.stderr
    before = {p: p.read_bytes() for p in short.rglob("*") if p.is_file()}
    long = tmp_path / "long"
    ext = subprocess.run([sys.executable, "-m", "odt.cli", "finetune", "--extend", str(short), "--online-steps", "500",
                          "--out", str(long)], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert ext.returncode == 0, ext.stderr
    assert {p: p.read_bytes() for p in short.rglob("*") if p.is_file()} == before
    old_rows = (short / "metrics.jsonl").read_text()
    rows = (long / "metrics.jsonl").read_text()
    assert rows.startswith(old_rows) and len(rows) > len(old_rows)
    new = [json.loads(r) for r in rows[len(old_rows):].splitlines()]
    rounds = [r for r in new if r.get("event") == "round"]
    last_old = max(json.loads(r)["round"] for r in old_rows.splitlines() if '"event": "round"' in r)
    assert [r["round"] for r in rounds] == list(range(last_old + 1, last_old + 1 + len(rounds)))
    assert rounds[0]["online_steps"] > 200 and new[-1]["online_steps"] == 500
    assert all("q_mean" in r for r in rounds)  # the critics came along
    s_old, s_new = (json.loads((d / "summary.json").read_text()) for d in (short, long))
    assert s_new["offline"] == s_old["offline"] and s_new["online_steps"] == 500
    assert s_new["extended_from"]["run"] == str(short) and s_new["extended_from"]["online_steps"] == 200
    assert json.loads((long / "config.json").read_text())["online_steps"] == 500
    order, _ = _buffer(long)
    old_order, _ = _buffer(short)
    assert len(set(order)) == len(order) and len(order) >= len(old_order)


@pytest.mark.parametrize("args,needle", [
    (["--online-steps", "300"], "give --out NEW"),
    (["--online-steps", "100", "--out", "NEW"], "not beyond the 200 steps"),
    (["--out", "NEW"], "needs the new total budget"),
    (["--online-steps", "300", "--out", "TAKEN"], "choose another --out"),
])
def test_extend_refuses_before_copying(args, needle, tmp_path, capsys):
    from odt.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"online_steps": 200}))
    (run / "summary.json").write_text(json.dumps({"online_steps": 200}))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    args = [str(tmp_path / {"NEW": "new", "TAKEN": "taken"}[a]) if a in ("NEW", "TAKEN") else a for a in args]
    assert main(["finetune", "--extend", str(run), *args]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_extend_refuses_budget_schedules(tmp_path, capsys):
    from odt.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"online_steps": 200, "noise_schedule": "linear"}))
    (run / "summary.json").write_text(json.dumps({"online_steps": 200}))
    assert main(["finetune", "--extend", str(run), "--online-steps", "400", "--out", str(tmp_path / "new")]) == 2
    assert "--noise-schedule on a schedule over its budget" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("edit,needle", [
    ({"dropout": 1.5}, "--dropout must be in [0, 1)"),  # refused by the config's validation
    ({"env": "Walker2d-v5"}, "Walker2d-v5"),  # refused once the data is loaded against the environment
])
def test_a_refused_extension_writes_nothing(edit, needle, tmp_path, hopper_npz, capsys):
    """--extend copies the run only once every check has passed: a refusal leaves no --out."""
    import shutil
    from pathlib import Path

    from odt.cli import main

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "run-vidt-ensemble", run)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "dataset": str(hopper_npz), **edit}))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["finetune", "--extend", str(run), "--online-steps", "2000", "--out", str(tmp_path / "new")]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
TINY = ["--preset", "cpu-small", "--embed-dim", "16", "--n-layer", "1", "--n-head", "1", "--batch-size", "4",
        "--pretrain-updates", "4", "--online-steps", "200", "--updates-per-round", "2", "--eval-every", "2",
        "--eval-episodes", "1", "--threads", "1", "--no-progress", "--checkpoint-every", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, hopper_npz):
    """A complete tiny run, made once; each test takes a copy."""
    from odt.cli import main

    out = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["run", *TINY, "--dataset", str(hopper_npz), "--out", str(out)]) == 0
    return out


def _copy(run, to):
    import shutil

    shutil.copytree(run, to)
    return to


def _edit_config(run, **changes):
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, **changes}, indent=2))


def _snapshot(d):
    return {p.relative_to(d): p.read_bytes() if p.is_file() else None for p in sorted(d.rglob("*"))}


# Each: how the killed run (a complete one without its summary.json) was damaged, and the words of the refusal.
DAMAGED = {
    "config against checkpoint": (lambda r: _edit_config(r, embed_dim=256),
                                  "has embed_dim 256, but the run's checkpoint was made with 16"),
    "heads against checkpoint": (lambda r: _edit_config(r, n_head=2), "has n_head 2"),
    "ensemble against checkpoint": (lambda r: _edit_config(r, ensemble=2), "has ensemble 2"),
    "critics against checkpoint": (lambda r: _edit_config(r, algo="odt-td3"),
                                   "has algo 'odt-td3', but the run's checkpoint was made with no TD3 critics"),
    "number as a string": (lambda r: _edit_config(r, batch_size="64"), 'batch_size must be an integer, got "64"'),
    "config a list": (lambda r: (r / "config.json").write_text("[1, 2]"), "settings must be an object"),
    "config a NaN": (lambda r: _edit_config(r, lr=float("nan")), "--lr must be a finite number"),
    "metrics cut short": (lambda r: (r / "metrics.jsonl").write_bytes((r / "metrics.jsonl").read_bytes()[:100]),
                          "was cut or removed"),
    "metrics removed": (lambda r: (r / "metrics.jsonl").unlink(), "was cut or removed"),
    "metrics edited": (lambda r: (r / "metrics.jsonl").write_bytes(b" " + (r / "metrics.jsonl").read_bytes()),
                       "was edited"),
    "summary torn": (lambda r: (r / "summary.json").write_text('{"offline": {"ret'),
                     "is not a summary odt wrote"),
    "no checkpoint yet": (lambda r: [p.unlink() for p in (r / "checkpoints").iterdir()],
                          "stopped before it saved one, so there is nothing to resume; start it afresh with the "
                          "command that made it and --overwrite"),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_refused_resume_leaves_the_run_directory_as_it_was(case, tiny_run, tmp_path, capsys):
    """Every file is read and checked against the others before any is written: no metrics.jsonl
    cut (or padded), no run.log line, no TensorBoard event."""
    from odt.cli import main

    run = _copy(tiny_run, tmp_path / "run")
    (run / "summary.json").unlink()  # killed before its end
    damage, needle = DAMAGED[case]
    damage(run)
    before = _snapshot(run)
    assert main(["run", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("odt: error: ") and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _snapshot(run) == before


@pytest.mark.parametrize("case", ["config against checkpoint", "summary torn", "metrics cut short"])
def test_a_refused_extension_writes_no_copy(case, tiny_run, tmp_path, capsys):
    from odt.cli import main

    run = _copy(tiny_run, tmp_path / "run")
    damage, needle = DAMAGED[case]
    damage(run)
    if case == "summary torn":
        needle = "remove it, then --resume the run to finish it"
    before = _snapshot(run)
    assert main(["finetune", "--extend", str(run), "--online-steps", "400", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert _snapshot(run) == before and not (tmp_path / "new").exists()


def test_a_resume_cuts_rows_after_the_checkpoint_and_pads_nothing(tiny_run, tmp_path):
    """A run killed after rows it had not checkpointed: those rows are cut, the run finishes as
    the never-stopped one did, and metrics.jsonl holds no NUL byte."""
    from odt.cli import main

    run = _copy(tiny_run, tmp_path / "run")
    (run / "summary.json").unlink()
    (run / "metrics.jsonl").write_bytes((run / "metrics.jsonl").read_bytes() + b'{"phase": "online"}\n')
    assert main(["run", "--resume", str(run)]) == 0
    metrics = (run / "metrics.jsonl").read_bytes()
    assert b"\0" not in metrics and metrics == (tiny_run / "metrics.jsonl").read_bytes()
