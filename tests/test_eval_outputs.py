"""What `odt eval` and `odt run` write besides numbers: the return-following curve (--targets: JSON,
table, plot) and videos of evaluation episodes (--video, --capture-video), on real tiny runs."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from odt.cli import main
from odt.config import ConfigError
from odt.data.sources import load_dataset
from odt.following import auto_targets

TINY = ["--preset", "cpu-small", "--embed-dim", "32", "--n-layer", "1", "--batch-size", "8", "--pretrain-updates", "6",
        "--online-steps", "60", "--updates-per-round", "3", "--eval-every", "2", "--eval-episodes", "1",
        "--threads", "1", "--episodes-per-round", "1", "--no-progress"]


@pytest.fixture(scope="module")
def run(hopper_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    assert main(["pretrain", *TINY, "--dataset", str(hopper_npz), "--out", str(out)]) == 0
    return out


def gl_or_skip():
    from odt.envs.video import check_video

    try:
        check_video("Hopper-v5", "--video")
    except ConfigError as e:  # a machine without EGL, OSMesa or PyAV: the error path is tested below
        pytest.skip(str(e))


def decode(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_return_following_curve(run, tmp_path, hopper_npz, capsys):
    targets = [0.0, 1000.0, 3600.0, 20000.0]
    plot = tmp_path / "curve.png"
    assert main(["eval", "--run", str(run), "--checkpoint", "pretrained", "--targets", ",".join(map(str, targets)),
                 "--episodes", "3", "--plot", str(plot), "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert "standard error" in table and str(run / "return_following.json") in table
    curve = json.loads((run / "return_following.json").read_text())
    rows = curve["targets"]
    assert [r["target"] for r in rows] == targets and curve["episodes"] == 3
    for r in rows:  # the statistics, recomputed from the episodes the file keeps
        returns = np.array(r["returns"])
        assert len(returns) == len(r["lengths"]) == r["episodes"] == 3
        assert r["return_mean"] == pytest.approx(returns.mean())
        assert r["return_std"] == pytest.approx(returns.std())
        assert r["return_stderr"] == pytest.approx(returns.std() / np.sqrt(3))
        assert r["length_mean"] == pytest.approx(np.mean(r["lengths"]))
        assert "normalized_stderr" in r
    # A return-conditioned policy acts on its target: the same seeds earn different returns.
    assert len({r["return_mean"] for r in rows}) > 1
    data = load_dataset(str(hopper_npz)).returns()
    assert curve["data_returns"]["min"] == pytest.approx(data.min())
    assert curve["data_returns"]["max"] == pytest.approx(data.max())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000

    # Nothing is overwritten: the next curve takes a new name; an explicit --out that exists is refused.
    first = (run / "return_following.json").read_text()
    assert main(["eval", "--run", str(run), "--checkpoint", "pretrained", "--targets", "auto", "--episodes", "1",
                 "--threads", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (run / "return_following.json").read_text() == first
    auto = json.loads((run / "return_following-2.json").read_text())
    assert printed == auto
    assert [r["target"] for r in auto["targets"]] == auto_targets(data.min(), data.max())
    assert len(auto["targets"]) == 8 and auto["targets"][5]["target"] == pytest.approx(data.max(), rel=1e-3)

    # --compare: an earlier curve (here the first) on the same axes as this one.
    both = tmp_path / "both.png"
    assert main(["eval", "--run", str(run), "--targets", "0,3600", "--episodes", "1", "--threads", "1",
                 "--plot", str(both), "--compare", str(run / "return_following.json"),
                 "--out", str(tmp_path / "final.json")]) == 0
    assert both.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and both.stat().st_size > plot.stat().st_size / 2


@pytest.mark.parametrize("args,needle", [
    (["--targets", "900,abc"], "--targets takes comma-separated returns"),
    (["--targets", "900", "--target", "900"], "not both"),
    (["--plot", "x.png"], "add --targets"),
    (["--targets", "900", "--compare", "c.json"], "add --plot"),
    (["--targets", "900", "--plot", "new.png", "--compare", "missing.json"], "not a return-following JSON"),
    (["--video-frames", "0"], "--video-frames must be positive"),
])
def test_bad_eval_flags_give_one_line(run, args, needle, capsys):
    assert main(["eval", "--run", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_existing_outputs_are_refused(run, tmp_path, capsys):
    taken = tmp_path / "taken.json"
    taken.write_text("keep")
    assert main(["eval", "--run", str(run), "--targets", "900", "--out", str(taken)]) == 2
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "old.mp4").write_text("keep")
    assert main(["eval", "--run", str(run), "--video", str(videos)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "exists" in err[0] and "not an empty directory" in err[1]
    assert taken.read_text() == "keep" and (videos / "old.mp4").read_text() == "keep"


def test_eval_videos_hold_each_episode_and_leave_returns_alone(run, tmp_path, capsys):
    gl_or_skip()
    common = ["eval", "--run", str(run), "--checkpoint", "pretrained", "--episodes", "3", "--threads", "1", "--json"]
    assert main(common) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*common, "--video", str(tmp_path / "v"), "--video-episodes", "2"]) == 0
    recorded = json.loads(capsys.readouterr().out)
    assert recorded["returns"] == plain["returns"]  # rendering changes nothing the policy sees
    assert recorded["videos"] == [str(tmp_path / "v" / f"episode-{i}.mp4") for i in range(2)]
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["episode-0.mp4", "episode-1.mp4"]
    for i, path in enumerate(recorded["videos"]):
        frames = decode(path)
        assert len(frames) == recorded["lengths"][i]  # one frame per step
        assert frames[0].shape == (480, 480, 3) and np.abs(frames[0].astype(int) - frames[-1]).mean() > 1

    # The frame cap: the episode goes on, its video stops.
    assert main([*common, "--video", str(tmp_path / "capped"), "--video-frames", "5"]) == 0
    capped = json.loads(capsys.readouterr().out)
    assert capped["returns"] == plain["returns"] and min(capped["lengths"]) > 5
    assert len(decode(capped["videos"][0])) == 5


# Gymnasium's renderer, half made when the GL context failed, raises in its __del__ (ignored)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_without_gl_video_flags_fail_in_one_line_before_any_work(run, tmp_path, capsys, monkeypatch):
    # A MUJOCO_GL that cannot work: in a new process MuJoCo's import fails, in this one (MuJoCo
    # imported) the first render does; either way one line, and nothing written.
    env = {**os.environ, "MUJOCO_GL": "no-such-gl", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "odt.cli", "eval", "--run", str(run), "--video", str(tmp_path / "v")],
                       capture_output=True, text=True, env=env, timeout=300)
    monkeypatch.setenv("MUJOCO_GL", "no-such-gl")
    # odt run answers before the dataset (which does not exist) is looked at.
    assert main(["run", *TINY, "--dataset", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "r"),
                 "--capture-video"]) == 2
    err = [*p.stderr.splitlines(), *capsys.readouterr().err.splitlines()]
    assert p.returncode == 2 and len(err) == 2
    assert all("MUJOCO_GL=no-such-gl" in line and "apt-get install" in line for line in err)
    assert err[0].startswith("odt: error: --video") and err[1].startswith("odt: error: --capture-video")
    assert not (tmp_path / "v").exists() and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_capture_video_records_each_evaluation(hopper_npz, tmp_path, monkeypatch):
    gl_or_skip()
    pytest.importorskip("wandb")
    from helpers import wandb_records
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for k, v in {"WANDB_MODE": "offline", "NETRC": tmp_path / "netrc", "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
                 "WANDB_DIR": tmp_path}.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    plain, out = tmp_path / "plain", tmp_path / "video"
    assert main(["run", *TINY, "--dataset", str(hopper_npz), "--out", str(plain)]) == 0
    assert main(["run", *TINY, "--dataset", str(hopper_npz), "--out", str(out), "--capture-video", "--wandb"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("event") == "eval"]
    assert len(evals) >= 2
    for r in evals:  # --eval-episodes 1: the video is the evaluation's episode
        frames = decode(out / r["video"])
        assert len(frames) == min(r["eval_length_mean"], 1000) and np.abs(frames[0].astype(int) - frames[-1]).mean() > 1
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(r["video"].split("/")[1] for r in evals)
    # Recording changes no number: the same seed writes the same rows.
    assert [{k: v for k, v in r.items() if k != "video"} for r in rows] == \
        [json.loads(line) for line in (plain / "metrics.jsonl").read_text().splitlines()]

    tb = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    tb.Reload()
    assert set(tb.Tags()["images"]) == {f"{r['phase']}/eval_video" for r in evals}
    gif = tb.Images("pretrain/eval_video")[0].encoded_image_string
    assert gif[:6] == b"GIF89a" and Image.open(io.BytesIO(gif)).n_frames > 1

    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    videos = [(item.nested_key[0], json.loads(item.value_json)) for r in wandb_records(run_file)
              if r.WhichOneof("record_type") == "history" for item in r.history.item
              if list(item.nested_key[1:]) == ["_type"]]
    assert videos == [(f"{r['phase']}/eval_video", "video-file") for r in evals]
    assert json.loads((out / "config.json").read_text())["wandb_mode"] == "offline"  # from WANDB_MODE


def test_help_shows_the_new_flags(capsys):
    for command, flags in [("eval", ["--targets", "--out", "--plot", "--video", "--video-episodes", "--video-frames"]),
                           ("run", ["--capture-video", "--wandb-mode"])]:
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code in (0, None)
        text = capsys.readouterr().out
        assert all(flag in text for flag in flags), command
