"""--wandb: the rows of metrics.jsonl, the config and the summary reach Weights & Biases (offline
mode: no network, the run file read back)."""
import json

import pytest

from helpers import wandb_records
from odt.cli import main

pytest.importorskip("wandb")

TINY = ["--preset", "cpu-small", "--embed-dim", "32", "--n-layer", "1", "--batch-size", "8", "--pretrain-updates", "6",
        "--online-steps", "60", "--updates-per-round", "3", "--eval-every", "1", "--eval-episodes", "2",
        "--threads", "1", "--episodes-per-round", "1", "--no-progress"]


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))


def test_offline_wandb_run_holds_the_metrics_config_and_summary(hopper_npz, tmp_path, no_wandb_login):
    out = tmp_path / "run"
    assert main(["run", *TINY, "--dataset", str(hopper_npz), "--out", str(out), "--wandb", "--wandb-mode", "offline",
                 "--wandb-project", "odt-test"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(run_file)
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert len(history) == len(rows)
    evals = [(r["online_steps"], r["eval_return_mean"]) for r in rows if r.get("event") == "eval" and r["phase"] == "online"]
    assert len(evals) >= 2
    logged = [(h["online/online_steps"], h["online/eval_return_mean"]) for h in history
              if "online/eval_return_mean" in h]
    assert [s for s, _ in logged] == [s for s, _ in evals]
    assert [r for _, r in logged] == pytest.approx([r for _, r in evals])
    pretrain_losses = [r["loss"] for r in rows if r["phase"] == "pretrain" and "loss" in r]
    assert [h["pretrain/loss"] for h in history if "pretrain/loss" in h] == pytest.approx(pretrain_losses)

    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert run.project == "odt-test" and config["algo"] == "odt" and config["embed_dim"] == 32
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in r.summary.update})
    saved = json.loads((out / "summary.json").read_text())
    assert summary["final"]["return_mean"] == pytest.approx(saved["final"]["return_mean"])


def test_online_wandb_without_a_login_fails_before_loading_data(tmp_path, capsys, no_wandb_login):
    # A dataset that does not exist: the login check answers first, in one line.
    assert main(["run", *TINY, "--dataset", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "run"),
                 "--wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "wandb login" in err and not (tmp_path / "run").exists()


def test_wandb_mode_follows_WANDB_MODE_unless_the_flag_is_given(monkeypatch):
    from odt.config import ConfigError
    from odt.logging import wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode(None) == "online"
    for env, mode in [("offline", "offline"), ("disabled", "disabled"), ("online", "online"), ("dryrun", "offline"),
                      ("OFFLINE", "offline")]:
        monkeypatch.setenv("WANDB_MODE", env)
        assert wandb_mode(None) == mode
        assert wandb_mode("online") == "online" and wandb_mode("offline") == "offline"  # the flag wins
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE=sometimes"):
        wandb_mode(None)


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_WANDB_MODE_alone_sets_the_mode_and_the_config_records_it(mode, hopper_npz, tmp_path, monkeypatch,
                                                                 no_wandb_login):
    monkeypatch.setenv("WANDB_MODE", mode)
    out = tmp_path / "run"
    assert main(["run", *TINY, "--dataset", str(hopper_npz), "--out", str(out), "--wandb"]) == 0
    assert json.loads((out / "config.json").read_text())["wandb_mode"] == mode
    assert len(list(out.glob("wandb/offline-run-*/run-*.wandb"))) == (mode == "offline")


def test_the_flag_wins_over_WANDB_MODE(tmp_path, capsys, monkeypatch, no_wandb_login):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["run", *TINY, "--dataset", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "run"),
                 "--wandb", "--wandb-mode", "online"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "wandb login" in err and not (tmp_path / "run").exists()
    # With a login the online flag passes, though wandb.login alone gives up under WANDB_MODE=offline.
    from odt.logging import check_wandb, wandb_mode

    import wandb

    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    try:
        check_wandb(wandb_mode("online"))
    finally:
        wandb.teardown()  # the process's W&B session keeps the key: later tests must find no login


@pytest.mark.slow
def test_a_resumed_run_holds_every_row_once(hopper_npz, tmp_path, no_wandb_login):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    args = [*TINY, "--online-steps", "400", "--updates-per-round", "30", "--eval-every", "2", "--checkpoint-every", "1",
            "--pretrain-updates", "40", "--dataset", str(hopper_npz), "--out", str(out), "--wandb", "--wandb-mode",
            "offline"]
    # Each process its own W&B service, as in two shells (the one this test process started, after
    # an in-process run, would be inherited through WANDB_SERVICE and still hold the killed run).
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "odt.cli", "run", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and (not (out / "metrics.jsonl").is_file()
                                      or (out / "metrics.jsonl").read_text().count('"event": "round"') < 3):
        time.sleep(0.01)
    time.sleep(0.3)  # inside the next round: rows after the checkpoint will be redone
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([sys.executable, "-m", "odt.cli", "run", "--resume", str(out)], capture_output=True,
                             text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    files = sorted(out.glob("wandb/offline-run-*/run-*.wandb"), key=lambda f: f.parent.name)
    assert len(files) == 2 and files[-1].stem == "run-" + (out / "wandb-id").read_text().strip()
    # The resumed W&B run holds metrics.jsonl exactly: the kept rows replayed, then the rest.
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in wandb_records(files[-1]) if r.WhichOneof("record_type") == "history"]
    assert len(history) == len(rows)
    for h, r in zip(history, rows):
        assert h[f"{r['phase']}/updates"] == r["updates"] and h[f"{r['phase']}/online_steps"] == r["online_steps"]
        if "eval_return_mean" in r:
            assert h[f"{r['phase']}/eval_return_mean"] == pytest.approx(r["eval_return_mean"])
