import os
import shutil
import tempfile

import pytest
import torch
from helpers import hopper_npz  # noqa: F401  (session fixture)


def pytest_configure(config):
    """The suite's own dataset cache, never the user's ~/.cache/odt (a warm cache there hid
    failures that every new user meets). ODT_CACHE, when set (`.ci/run` sets a fresh one), is
    used as it is; otherwise one directory per test session, made by the controlling process
    and inherited by pytest-xdist's workers. Embedded datasets are generated into it at most once:
    load_embedded holds a file lock while it generates, so a second worker waits for the file."""
    if "ODT_CACHE" not in os.environ and not hasattr(config, "workerinput"):
        os.environ["ODT_CACHE"] = tempfile.mkdtemp(prefix="odt-test-cache-")
        config._odt_cache = os.environ["ODT_CACHE"]


def pytest_unconfigure(config):
    cache = getattr(config, "_odt_cache", None)
    if cache:
        shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop("ODT_CACHE", None)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
