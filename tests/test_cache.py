"""The dataset cache on a fresh machine: two processes that need the same embedded dataset at once
(sweep runs, test workers) generate it once; the other waits for the file and reads it."""
import os
import subprocess
import sys

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
    assert files == ["odt__hopper-random-g2.npz"]  # no temporary file left behind
