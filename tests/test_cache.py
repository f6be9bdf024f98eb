"""odt's cache: on a fresh machine, two processes that need the same embedded dataset at once
(sweep runs, test workers) generate it once; what it serves matches its checksum, else it is
rebuilt with one line saying so; a cache in the way of a file is one line, exit 2."""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import make_episode

from odt import shipped
from odt.checkpoint import load_checkpoint
from odt.cli import main
from odt.data import embedded
from odt.data.formats import save_npz
from odt.data.trajectories import TrajectoryDataset

SCRIPT = """
import sys
import odt.data.embedded as e
e.EMBEDDED["odt/hopper-random"]["transitions"] = 3000  # the real recipe, fewer steps
ds = e.load_embedded("odt/hopper-random", log=lambda line: print(line, flush=True))
print("steps", ds.n_transitions)
"""


def test_two_processes_generate_an_embedded_dataset_once(tmp_path):
    env = dict(os.environ, ODT_CACHE=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    logs = "".join(out for out, _ in outs)
    assert logs.count("[data] generating odt/hopper-random") == 1, logs
    assert logs.count("steps 3000") == 2
    files = sorted(p.name for p in (tmp_path / "cache" / "datasets").iterdir() if not p.name.endswith(".lock"))
    assert files == ["odt__hopper-random-g2.npz", "odt__hopper-random-g2.npz.sha256"]  # no temporary file left


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ODT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(embedded.EMBEDDED["odt/hopper-random"], "transitions", 300)  # the recipe, fewer steps
    return tmp_path / "cache"


@pytest.mark.parametrize("damage,problem", [
    ("another dataset", "does not match its checksum"),
    ("no checksum", "has no checksum"),  # a cache of an earlier version, or a process killed before sealing it
])
def test_an_embedded_dataset_that_does_not_match_is_made_again_from_its_recipe(damage, problem, cache, capsys):
    first = embedded.load_embedded("odt/hopper-random")
    path = embedded.cache_path("odt/hopper-random")
    original = path.read_bytes()
    capsys.readouterr()
    if damage == "another dataset":  # a valid npz, of other data
        save_npz(TrajectoryDataset([make_episode(40, obs_dim=11, act_dim=3)], env_id="Hopper-v5"), path)
    else:
        path.with_name(path.name + ".sha256").unlink()
    again = embedded.load_embedded("odt/hopper-random")
    err = capsys.readouterr().err
    assert f"[data] odt/hopper-random in {path.parent} {problem}; generating it again from its recipe" in err
    assert again.n_transitions == first.n_transitions == 300 and path.read_bytes() == original
    embedded.load_embedded("odt/hopper-random")
    assert "checksum" not in capsys.readouterr().err  # sealed again: served without a word


def _float_tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() and obj.numel() >= 16 else []
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else []
    return [t for item in items for t in _float_tensors(item)]


@pytest.mark.parametrize("name", ["pretrained.pt", "config.json"])
def test_a_shipped_model_that_does_not_match_is_unpacked_again(name, cache, capsys):
    """Its checkpoint with floats overwritten, or its config.json edited: `odt eval` says so in one
    line and evaluates the model the package holds."""
    run = shipped.resolve("odt:cpu-small")
    target = run / "checkpoints" / name if name.endswith(".pt") else run / name
    intact = load_checkpoint(run / "checkpoints" / "pretrained.pt")
    if name.endswith(".pt"):
        state = torch.load(target, weights_only=True)
        for weight in _float_tensors(state):
            weight.view(-1)[:16] = 100.0
        torch.save(state, target)
    else:
        target.write_text(json.dumps({**json.loads(target.read_text()), "rtg_scale": 1.0}))
    capsys.readouterr()
    assert main(["eval", "--run", "odt:cpu-small", "--episodes", "1", "--threads", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.strip() == (f"odt: warning: odt:cpu-small in {run.parent} does not match its checksum; "
                           "unpacking it again from the package")
    assert np.isfinite(json.loads(out)["return_mean"])
    back = load_checkpoint(run / "checkpoints" / "pretrained.pt")
    torch.testing.assert_close(back["ensemble"]["learners"][0]["model"], intact["ensemble"]["learners"][0]["model"])
    assert json.loads((run / "config.json").read_text()) == shipped.card("cpu-small")["config"]


@pytest.mark.parametrize("args,where,needle", [
    (["eval", "--run", "odt:cpu-small"], "", "(ODT_CACHE) is a file; point ODT_CACHE at a directory"),
    (["data", "inspect", "odt/hopper-random"], "datasets", "is a file where odt keeps its datasets; move it away"),
    (["run", "--dataset", "odt/hopper-random", "--no-progress"], "datasets", "is a file where odt keeps its datasets"),
    (["finetune", "--init", "odt:cpu-small", "--no-progress"], "models", "is a file where odt keeps its models"),
])
def test_a_file_in_the_caches_way_is_one_line(args, where, needle, tmp_path, monkeypatch, capsys):
    (tmp_path / "cache").mkdir()
    blocker = tmp_path / "cache" / where if where else tmp_path / "cache-file"
    blocker.write_text("mine")
    monkeypatch.setenv("ODT_CACHE", str(blocker if not where else tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("odt: error: ") and needle in err and len(err.strip().splitlines()) == 1, err
    assert sorted(tmp_path.rglob("*")) == before and blocker.read_text() == "mine"


def test_a_full_cache_is_one_line(cache, monkeypatch, capsys):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(shipped, "write_atomic", full)
    assert main(["eval", "--run", "odt:cpu-small", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to odt's cache" in err and "No space left" in err and len(err.strip().splitlines()) == 1
