"""What a run leaves behind and shows: metrics.jsonl, TensorBoard events, run.log, progress lines."""
from __future__ import annotations

import io
import json
import math
import os
import time
import uuid
from pathlib import Path

from .config import ConfigError


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; null keeps each line valid for every reader
    return v


class WandbTracker:
    """The same rows to Weights & Biases (--wandb): each phase's metrics against its own step
    (pretrain/* against pretrain/updates, online/* against online/online_steps, as TensorBoard
    plots them), the config, and summary.json as the run's summary.

    A resumed run starts a new W&B run that first replays the rows metrics.jsonl kept: what a
    killed process had sent may never have reached W&B's files, and the rows after the checkpoint
    are redone, so only a replay makes the W&B run equal metrics.jsonl, no row lost or doubled.
    The id of the newest W&B run is in RUN_DIR/wandb-id."""

    def __init__(self, run_dir: Path, config: dict, project: str, mode: str, replay: list[dict] = ()):
        import wandb

        run_id = uuid.uuid4().hex[:12]
        (run_dir / "wandb-id").write_text(run_id + "\n")
        try:
            self.run = wandb.init(project=project, mode=mode, dir=str(run_dir), id=run_id, name=run_dir.name,
                                  config=config, settings=wandb.Settings(silent=True, console="off"))
        except Exception as e:  # wandb raises its own errors (auth, network, ...): one line for the user
            raise ConfigError(f"W&B did not start ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                              f"fix that or pass --wandb-mode offline, then rerun with --out {run_dir} "
                              "--overwrite") from None
        for phase, step in (("pretrain", "updates"), ("online", "online_steps")):
            self.run.define_metric(f"{phase}/{step}")
            self.run.define_metric(f"{phase}/*", step_metric=f"{phase}/{step}")
        for row in replay:
            self.log(row)

    def log(self, row: dict) -> None:
        phase = row.get("phase", "run")
        self.run.log({f"{phase}/{k}": v for k, v in row.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None})

    def video(self, phase: str, steps: dict, path: Path) -> None:
        import wandb

        self.run.log({f"{phase}/eval_video": wandb.Video(str(path), format="mp4"),
                      **{f"{phase}/{k}": v for k, v in steps.items()}})

    def summary(self, summary: dict) -> None:
        for k, v in summary.items():
            self.run.summary[k] = v

    def close(self) -> None:
        self.run.finish()


WANDB_MODES = ("online", "offline", "disabled")


def wandb_mode(flag: str | None) -> str:
    """--wandb-mode, else W&B's own WANDB_MODE variable (dryrun, its old name for offline, too),
    else online."""
    if flag is not None:
        return flag
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if not env:
        return "online"
    mode = "offline" if env == "dryrun" else env
    if mode not in WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={env} is not a W&B mode odt knows; set it to one of {', '.join(WANDB_MODES)} "
                          "or pass --wandb-mode")
    return mode


def check_wandb(mode: str) -> None:
    """Before any data is loaded: the extra installed, and a login for online mode (disabled
    needs neither: nothing goes to W&B)."""
    if mode == "disabled":
        return
    try:
        import wandb
    except ImportError:
        raise ConfigError("--wandb needs the optional extra: pip install 'odt[wandb]'") from None
    if mode != "online":
        return
    # W&B's process-wide settings follow WANDB_MODE, and under offline or disabled wandb.login
    # answers False whatever the login: the flag wins over the variable there too.
    wandb.setup(wandb.Settings(mode="online"))
    if not wandb.login(prompt=False, verify=False):
        raise ConfigError("--wandb-mode online needs a W&B login: run `wandb login`, or pass --wandb-mode offline "
                          "or set WANDB_MODE=offline (then `wandb sync RUN_DIR/wandb/offline-run-*` uploads it later)")


class RunLogger:
    def __init__(self, run_dir: Path, config: dict, echo: bool = True, wandb: dict | None = None):
        self.run_dir = run_dir
        self.echo = echo
        self.metrics = open(run_dir / "metrics.jsonl", "a", buffering=1)
        self.tracker = None
        if wandb and wandb["mode"] != "disabled":
            kept = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
            self.tracker = WandbTracker(run_dir, config, **wandb, replay=kept)
        self.text = open(run_dir / "run.log", "a", buffering=1)
        self.start = time.time()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            rows = "\n".join(f"|{k}|{v}|" for k, v in config.items())
            self.tb.add_text("hyperparameters", "|setting|value|\n|-|-|\n" + rows)
        except ImportError:  # pragma: no cover - tensorboard is a dependency; stay usable without it
            self.tb = None

    def log(self, row: dict) -> None:
        """One JSON object per line; numbers also go to TensorBoard against the update count. No
        wall-clock times here, so that two runs with the same seed write identical files
        (TensorBoard events carry their wall time; run.log the elapsed times)."""
        row = {k: _clean(v) for k, v in row.items()}
        self.metrics.write(json.dumps(row) + "\n")
        if self.tb is not None:
            step = row.get("online_steps", 0) if row.get("phase") == "online" else row.get("updates", 0)
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None:
                    self.tb.add_scalar(f"{row.get('phase', 'run')}/{k}", v, step)
        if self.tracker is not None:
            self.tracker.log(row)

    def video(self, row: dict, video) -> None:
        """An evaluation episode's video (odt.envs.video.Video) beside the row's numbers: TensorBoard gets
        the thumbnails as an animated GIF, W&B the MP4."""
        phase = row.get("phase", "run")
        if self.tb is not None and video.thumbnails:
            step = row.get("online_steps", 0) if phase == "online" else row.get("updates", 0)
            self.tb._get_file_writer().add_summary(_gif_summary(f"{phase}/eval_video", video), step)
        if self.tracker is not None:
            self.tracker.video(phase, {k: row[k] for k in ("updates", "online_steps") if k in row}, video.path)

    def summary(self, summary: dict) -> None:
        if self.tracker is not None:
            self.tracker.summary(summary)

    def info(self, line: str) -> None:
        self.text.write(line + "\n")
        if self.echo:
            print(line, flush=True)

    def close(self) -> None:
        self.metrics.close()
        self.text.close()
        if self.tb is not None:
            self.tb.close()
        if self.tracker is not None:
            self.tracker.close()


def _gif_summary(tag: str, video):
    """What SummaryWriter.add_video writes (an image summary holding an animated GIF), made with
    Pillow: add_video itself needs moviepy.editor, which moviepy 2 no longer has."""
    from PIL import Image
    from torch.utils.tensorboard.summary import Summary

    frames = [Image.fromarray(f) for f in video.thumbnails]
    buf = io.BytesIO()  # GIF delays count hundredths of a second: 20 fps and slower play at their rate
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                   duration=round(1000 * video.thumbnail_every / video.fps))
    h, w, c = video.thumbnails[0].shape
    return Summary(value=[Summary.Value(tag=tag, image=Summary.Image(height=h, width=w, colorspace=c,
                                                                     encoded_image_string=buf.getvalue()))])


def fmt_return(x: float) -> str:
    """One decimal for MuJoCo-sized returns; three significant digits for small ones (the reward
    hill's lie in [0, 1], where 0.68 and 0.72 would both print as 0.7)."""
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Rate and time left for a phase, printed at most every ``every`` seconds (plain lines, so
    they read the same in a terminal, a CI log and run.log)."""

    def __init__(self, logger: RunLogger, phase: str, total: int, unit: str, every: float = 5.0, done: int = 0):
        self.logger, self.phase, self.total, self.unit, self.every = logger, phase, total, unit, every
        self.start = self.last = time.time()
        self.done = self.first = done  # a resumed phase starts part-way

    def update(self, done: int, force: bool = False, **info) -> None:
        self.done = done
        now = time.time()
        if not force and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0  # this process's work only
        left = max(self.total - done, 0) / rate if rate > 0 else float("inf")
        extras = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        self.logger.info(f"[{self.phase}] {done}/{self.total} {self.unit} ({100 * done / max(self.total, 1):.0f}%)"
                         f"  {rate:.1f} {self.unit}/s  {extras}  elapsed {fmt_time(elapsed)}  left {fmt_time(left)}")
