import fnmatch
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import hopper_npz  # noqa: F401  (session fixture)

# What a test may leave in the suite's temp dir, where it goes when its process ends or is made
# once per process: torch's compile cache folder (importing torch._dynamo, as torchrl,
# stable-baselines3 and onnxscript do, makes it, empty), wandb's service socket and its media and
# artifact folders (removed at exit).
TEMP_ALLOWED = ("torchinductor_*", "wandb-*", "tmp*wandb-media", "tmp*wandb-artifacts")
# What libraries leave in the temp dir, where odt's code cannot stop them: Ray's session folders
# (`odt sweep`) and onnxruntime's telemetry session file. They go with the suite's temp dir and are
# counted at the end. stable-baselines3's logger folders and Gymnasium-Robotics' maze model files
# are not here: odt gives its SB3 models a logger without a folder and makes every environment
# (its own, and minari's) in a temp dir of its own (envs/make.py: private_tempdir), so a test
# that leaves one fails.
TEMP_KNOWN_LEAKS = ("ray", ".ses")
_SAVED_ENV = ("TMPDIR", "PYTEST_DEBUG_TEMPROOT", "ODT_TEST_TMPDIR")


def _matches(name: str, patterns) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def pytest_configure(config):
    """The suite's own dataset cache, never the user's ~/.cache/odt (a warm cache there hid
    failures that every new user meets). ODT_CACHE, when set (`.ci/run` sets a fresh one), is
    used as it is; otherwise one directory per test session, made by the controlling process
    and inherited by pytest-xdist's workers. Embedded datasets are generated into it at most once:
    load_embedded holds a file lock while it generates, so a second worker waits for the file.

    The suite's own temp dir too, so that the tests leave nothing in the system's: the controlling
    process makes one per session, each process that runs tests uses a folder of it as its TMPDIR
    (its subprocesses inherit it), a test that leaves something unknown there fails, and it is
    removed at the end. pytest's tmp_path folders stay where pytest keeps them, with its retention."""
    if not hasattr(config, "workerinput"):
        if "ODT_CACHE" not in os.environ:
            os.environ["ODT_CACHE"] = tempfile.mkdtemp(prefix="odt-test-cache-")
            config._odt_cache = os.environ["ODT_CACHE"]
        system = tempfile.gettempdir()
        config._odt_saved_env = {k: os.environ.get(k) for k in _SAVED_ENV}
        config._odt_system_tmp = system
        config._odt_system_before = {n for n in os.listdir(system) if _matches(n, TEMP_KNOWN_LEAKS)}
        config._odt_tmp = tempfile.mkdtemp(prefix="odt-test-tmp-")
        os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", system)
        os.environ["ODT_TEST_TMPDIR"] = config._odt_tmp
    own = Path(os.environ["ODT_TEST_TMPDIR"]) / getattr(config, "workerinput", {}).get("workerid", "main")
    own.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = str(own)


def _unknown(names) -> list[str]:
    return sorted(n for n in names if not _matches(n, TEMP_ALLOWED + TEMP_KNOWN_LEAKS))


@pytest.fixture(autouse=True)
def _leaves_nothing_in_the_temp_dir():
    """A test (or a subprocess it runs) that leaves something unknown in its temp dir fails."""
    own = Path(os.environ["TMPDIR"])
    before = set(os.listdir(own))
    yield
    left = _unknown(set(os.listdir(own)) - before)
    if left:  # left in place (it may still be in use): the suite's temp dir goes at the end
        pytest.fail(f"the test left {left} in the temp dir {own}")


def pytest_sessionfinish(session, exitstatus):
    """What session- or module-scoped fixtures left in the suite's temp dir fails the session; the
    known library leaks are counted; those that appeared in the system temp dir meanwhile are
    named (other processes may have made them: the suite's processes write to their own)."""
    config = session.config
    root = getattr(config, "_odt_tmp", None)
    if root is None:
        return
    names = [(d.name, n) for d in sorted(Path(root).iterdir()) if d.is_dir() for n in os.listdir(d)]
    unknown = [f"{d}/{n}" for d, n in names if not _matches(n, TEMP_ALLOWED + TEMP_KNOWN_LEAKS)]
    known = [n for _, n in names if _matches(n, TEMP_KNOWN_LEAKS)]
    system = config._odt_system_tmp
    appeared = sorted({n for n in os.listdir(system) if _matches(n, TEMP_KNOWN_LEAKS)} - config._odt_system_before)
    config._odt_report = []
    if unknown:
        config._odt_report.append(f"FAILED: the tests left {unknown} in their temp dir {root}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if known:
        counts = {p: sum(fnmatch.fnmatch(n, p) for n in known) for p in TEMP_KNOWN_LEAKS}
        config._odt_report.append("temp dir: removed what libraries left there (see TEMP_KNOWN_LEAKS): "
                                  + ", ".join(f"{c} {p}" for p, c in counts.items() if c))
    if appeared:
        config._odt_report.append(f"warning: {appeared} appeared in {system} during the tests "
                                  "(not from the suite's processes, which write to their own temp dir)")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for line in getattr(config, "_odt_report", []):
        terminalreporter.write_line(line, red=line.startswith("FAILED"))


def pytest_unconfigure(config):
    cache = getattr(config, "_odt_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop("ODT_CACHE", None)
    root = getattr(config, "_odt_tmp", None)
    if root:
        shutil.rmtree(root, ignore_errors=True)
        for k, v in config._odt_saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        tempfile.tempdir = None


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
