"""Videos of evaluation episodes (`odt eval --video`, `odt run --capture-video`): MuJoCo renders
off-screen, PyAV writes the MP4 as the frames come (a 1000-step episode held as frames would be
0.7 GB). Only the recorded environments render; physics never depends on rendering, so a recorded
episode has the return it has unrecorded (tested)."""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np

from ..config import ConfigError
from .make import make_env, make_env_checked

MAX_FRAMES = 1000  # a whole episode of the Gym locomotion tasks, whose horizon is 1000 steps
THUMBNAIL_FPS = 20  # TensorBoard's copy: at most this rate, half the size (its GIF lives in the events file)
GL_HELP = ("install EGL (Debian/Ubuntu: apt-get install libegl1 libegl-mesa0; a GPU driver brings its own) with "
           "MUJOCO_GL=egl (odt's default), or OSMesa (apt-get install libosmesa6) with MUJOCO_GL=osmesa")


def default_gl() -> str:
    """MUJOCO_GL as the user set it, else egl: off-screen, with a GPU's driver or Mesa's software
    renderer, and no display needed (Gymnasium would try a window-system GLFW first)."""
    return os.environ.setdefault("MUJOCO_GL", "egl")


def check_video(env_id: str, flag: str) -> None:
    """Before any expensive work: PyAV is installed and ``env_id`` renders one frame off-screen;
    otherwise one line that names MUJOCO_GL and what to install."""
    try:
        import av  # noqa: F401
    except ImportError:
        raise ConfigError(f"{flag} needs PyAV to write MP4 files: pip install 'odt[video]'") from None
    gl = default_gl()  # before MuJoCo's first import, which reads it
    env = None
    try:
        make_env_checked(env_id).close()  # an unknown id answers as everywhere else
        env = make_env(env_id, render_mode="rgb_array")
        env.reset(seed=0)
        with warnings.catch_warnings():  # GLFW warns before it fails; the one line below says it all
            warnings.simplefilter("ignore")
            frame = env.render()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - each GL backend fails its own way (ImportError, RuntimeError, ...)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{flag}: MuJoCo cannot render off-screen with MUJOCO_GL={gl} ({reason}); "
                          f"{GL_HELP}") from None
    finally:
        if env is not None:
            env.close()
    if not isinstance(frame, np.ndarray) or frame.ndim != 3:
        raise ConfigError(f"{flag}: {env_id} renders no RGB frames (render_mode rgb_array gave {type(frame).__name__})")


@dataclass
class Video:
    """A written episode: the MP4, its frame count and rate, and (when asked) TensorBoard's copy,
    every ``thumbnail_every``-th frame at half the size."""

    path: Path
    frames: int
    fps: float
    thumbnails: list[np.ndarray] = field(default_factory=list)
    thumbnail_every: int = 1


class Mp4Writer:
    """H.264 (MPEG-4 part 2 where the PyAV build lacks it) in yuv420p, which every player reads.
    Written under a .part name and renamed when complete, so that a killed process leaves no
    truncated .mp4."""

    def __init__(self, path: Path, fps: float):
        import av

        self.path, self.part = path, path.with_name(path.name + ".part")
        self.container = av.open(str(self.part), mode="w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.stream = self.container.add_stream(codec, rate=round(fps))
        self.stream.pix_fmt = "yuv420p"
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        import av

        h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2  # yuv420p needs even sides
        if self.frames == 0:
            self.stream.width, self.stream.height = w, h
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w, :3]), format="rgb24")
        self.container.mux(self.stream.encode(picture))
        self.frames += 1

    def close(self) -> None:
        if self.frames:
            self.container.mux(self.stream.encode())  # flush the encoder's delayed frames
        self.container.close()
        if self.frames:
            self.part.replace(self.path)
        else:
            self.part.unlink(missing_ok=True)


class EpisodeRecorder(gym.Wrapper):
    """Records the first episode that starts after ``arm(path)``: one frame per step, rendered after
    the step (so an episode of T steps gives T frames), at most ``max_frames``; past the cap the
    episode goes on unrendered. The vector environment's automatic resets start nothing."""

    def __init__(self, env: gym.Env, max_frames: int = MAX_FRAMES):
        super().__init__(env)
        self.max_frames = max_frames
        self.fps = float(env.metadata.get("render_fps") or 30)
        self.thumbnail_every = max(1, round(self.fps / THUMBNAIL_FPS))
        self._next: tuple[Path, bool] | None = None
        self._writer: Mp4Writer | None = None
        self._thumbs: list[np.ndarray] | None = None
        self._done: Video | None = None

    def arm(self, path: Path, thumbnails: bool = False) -> None:
        self._next, self._done = (path, thumbnails), None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._stop()
        if self._next is not None:
            path, thumbnails = self._next
            self._next, self._writer, self._thumbs = None, Mp4Writer(path, self.fps), [] if thumbnails else None
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self._writer is not None:
            frame = self.env.render()
            self._writer.add(frame)
            if self._thumbs is not None and (self._writer.frames - 1) % self.thumbnail_every == 0:
                self._thumbs.append(frame[::2, ::2].copy())
            if terminated or truncated or self._writer.frames >= self.max_frames:
                self._stop()
        return obs, reward, terminated, truncated, info

    def _stop(self) -> None:
        if self._writer is not None:
            w, self._writer = self._writer, None
            w.close()
            self._done = (Video(w.path, w.frames, self.fps, self._thumbs or [], self.thumbnail_every)
                          if w.frames else None)
            self._thumbs = None

    def finish(self) -> Video | None:
        """The recorded episode's video (closed here if the episode was cut short), or None."""
        self._next = None
        self._stop()
        done, self._done = self._done, None
        return done

    def close(self):
        self._stop()
        super().close()


def _recorded_env(env_id: str, max_frames: int) -> gym.Env:
    return EpisodeRecorder(make_env(env_id, render_mode="rgb_array"), max_frames)


def recording_vector_env(env_id: str, n: int, recorded: int, max_frames: int = MAX_FRAMES) -> gym.vector.SyncVectorEnv:
    """``make_vector_env``'s n environments, of which the first ``recorded`` render into
    EpisodeRecorders; the others never render."""
    default_gl()
    return gym.vector.SyncVectorEnv([functools.partial(_recorded_env, env_id, max_frames) if i < recorded
                                     else functools.partial(make_env, env_id) for i in range(n)])


def recorders(envs: gym.vector.VectorEnv) -> list[EpisodeRecorder]:
    return [e for e in getattr(envs, "envs", []) if isinstance(e, EpisodeRecorder)]
