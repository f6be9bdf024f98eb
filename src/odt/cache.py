"""odt's cache ($ODT_CACHE, default ~/.cache/odt): the datasets it generates and the flat copies of
Minari's (datasets/), and the shipped models it unpacks (models/). Nothing is served from it
unverified: each entry is sealed by a SHA-256 manifest written, atomically, after its files; an
entry that does not match its manifest (or has none) is rebuilt from its source, with one line
saying so."""
from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Callable

from filelock import FileLock

from .config import ConfigError

_FULL_OR_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def cache_root() -> Path:
    root = Path(os.environ.get("ODT_CACHE", Path.home() / ".cache" / "odt"))
    if root.exists() and not root.is_dir():
        raise ConfigError(f"odt's cache {root} (ODT_CACHE) is a file; point ODT_CACHE at a directory, or unset it "
                          "for ~/.cache/odt")
    return root


def cache_subdir(name: str) -> Path:
    """A folder of the cache (it is made when something is first written there)."""
    path = cache_root() / name
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file where odt keeps its {name}; move it away, or point ODT_CACHE at "
                          "another directory")
    return path


def make_dirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {path} for odt's cache ({e.strerror or e}); point ODT_CACHE at a "
                          "writable directory") from e


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """A reader sees the old file or the new one, never half of one; the temporary name is this
    writer's own, so that processes writing the same file at once do not share one."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _problem(manifest: Path, files: list[Path]) -> str | None:
    """None where every file matches the manifest; "absent" where the entry was never made;
    otherwise what is wrong, as the line that reports it says it."""
    if not manifest.is_file():
        return "absent" if not any(f.exists() for f in files) else "has no checksum"
    recorded = {}
    for line in manifest.read_text(errors="replace").splitlines():
        hexdigest, _, name = line.partition("  ")
        recorded[name] = hexdigest
    for f in files:
        name = f.relative_to(manifest.parent).as_posix()
        if not f.is_file() or recorded.get(name) != digest(f):
            return "does not match its checksum"
    return None


def verified(manifest: Path, files: list[Path], build: Callable[[], None], what: str, remedy: str,
             log: Callable[[str], None]) -> None:
    """Make the cache entry ``files``, sealed by ``manifest``, whole and as odt wrote it: built by
    ``build`` on first use; where it does not match, rebuilt, with one line through ``log`` (what
    and ``remedy``). Under a lock: processes that start together build it once, and none reads a
    half-built one."""
    if _problem(manifest, files) is None:
        return
    make_dirs(manifest.parent)
    try:
        with FileLock(str(manifest) + ".lock"):
            problem = _problem(manifest, files)
            if problem is None:  # another process built it while this one waited
                return
            if problem != "absent":
                log(f"{what} in {manifest.parent} {problem}; {remedy}")
            manifest.unlink(missing_ok=True)  # no reader checks a half-rebuilt entry against the old seal
            build()
            write_atomic(manifest, "".join(f"{digest(f)}  {f.relative_to(manifest.parent).as_posix()}\n"
                                           for f in files).encode())
    except OSError as e:
        if e.errno not in _FULL_OR_READ_ONLY:
            raise
        raise ConfigError(f"cannot write to odt's cache {manifest.parent} ({e.strerror}); free space there, or "
                          "point ODT_CACHE at a writable directory") from e
