"""The cost of a round of updates, as the loop makes it: B windows drawn from the replay buffer and
one gradient step, I times, then the round's metrics on the host. This tree's code against an
earlier commit's, in one process, alternating, on the same data and the same initial weights.

    python benchmarks/round_speed.py [--baseline 996933f] [--device cpu] [--algo odt|vidt]
                                     [--size small|paper] [--updates 100] [--reps 5] [--threads 1]

The earlier code comes from git (``git archive``) as a package of its own, odt_before. Prints the
median milliseconds per actor update of each and their ratio (below 1: this tree is faster)."""
from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from speed import cpu_name

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"small": (128, 3, 1, 64), "paper": (512, 4, 4, 256)}  # embed, layers, heads, batch
OBS, ACT, K = 11, 3, 20


def load_before(commit: str) -> object:
    """The odt package as ``commit`` had it, importable as odt_before (its imports are relative)."""
    data = subprocess.run(["git", "archive", commit, "src/odt"], cwd=ROOT, capture_output=True, check=True).stdout
    where = Path(tempfile.mkdtemp(prefix="odt-before-"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(where, filter="data")
    (where / "src" / "odt").rename(where / "odt_before")
    sys.path.insert(0, str(where))
    return importlib.import_module("odt_before")


def episodes(pkg, n: int, length: int) -> list:
    rng = np.random.default_rng(0)
    Episode = importlib.import_module(f"{pkg.__name__}.data.trajectories").Episode
    return [Episode(rng.normal(size=(length, OBS)).astype(np.float32), rng.uniform(-1, 1, (length, ACT)).astype(np.float32),
                    rng.uniform(0, 3, length).astype(np.float32), truncated=True,
                    final_observation=rng.normal(size=OBS).astype(np.float32)) for _ in range(n)]


def parts(pkg, before: bool, algo: str, size: str, device: str):
    """A learner and a filled buffer of ``pkg``, built through the API that version has."""
    mod = lambda name: importlib.import_module(f"{pkg.__name__}.{name}")  # noqa: E731
    d, layers, heads, _ = SIZES[size]
    torch.manual_seed(0)
    head = "deterministic" if algo == "vidt" else "tanh_gaussian"
    spec = mod("models.transformer").ModelSpec(obs_dim=OBS, act_dim=ACT, embed_dim=d, n_layer=layers, n_head=heads,
                                               dropout=0.1, context_len=K, action_head=head)
    model = mod("models.transformer").DecisionTransformer(spec).to(device)
    config = mod("config")
    td3 = config.TD3Settings() if algo == "vidt" else None
    optim = config.OptimSettings(lr=1e-4, weight_decay=5e-4, warmup_steps=100)
    learner = mod("algos.learner").Learner(model, "dt" if algo == "vidt" else "odt", optim, td3)
    eps = episodes(pkg, 200, 500)
    buffers = mod("data.buffer")
    mean, std = np.zeros(OBS, np.float32), np.ones(OBS, np.float32)
    if before:
        buf = buffers.ReplayBuffer(len(eps), mean, std, 1000.0, keep_next=td3 is not None)
    else:
        scaling = mod("scaling").Scaling(mean, std, -np.ones(ACT), np.ones(ACT))
        sampling = buffers.Sampling(1000.0, td3 is not None, None, True, 0.99, 0.0)
        buf = buffers.ReplayBuffer(len(eps), scaling, sampling, eps, device)
    buf.fill(eps)
    return learner, buf


def round_before(learner, buf, n: int, B: int, rng, device: str) -> None:
    """The earlier loop: each step's metrics read to the host and summed there."""
    sums: dict[str, float] = {}
    for _ in range(n * learner.calls_per_actor_update):
        for k, v in learner.update(buf.sample(B, K, rng).to(device)).items():
            sums[k] = sums.get(k, 0.0) + v


def round_now(learner, buf, n: int, B: int, rng, device: str) -> None:
    for _ in range(n * learner.calls_per_actor_update):
        learner.update(buf.sample(B, K, rng))
    learner.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="996933f")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--algo", default="odt", choices=["odt", "vidt"])
    ap.add_argument("--size", default="small", choices=list(SIZES))
    ap.add_argument("--updates", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    import odt
    before = load_before(a.baseline)
    B = SIZES[a.size][3]
    runs = {"before": (parts(before, True, a.algo, a.size, a.device), round_before),
            "now": (parts(odt, False, a.algo, a.size, a.device), round_now)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(a.reps + 1):  # the first round of each warms up, untimed
        for name, ((learner, buf), fn) in runs.items():
            rng = np.random.default_rng(rep)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn(learner, buf, a.updates, B, rng, a.device)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            if rep:
                times[name].append((time.perf_counter() - t) / a.updates * 1e3)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, device {a.device}, torch {torch.__version__}")
    print(f"a round of {a.updates} {a.algo} updates at {a.size} size (batch {B}, K {K}), {a.reps} rounds each, "
          f"alternating; baseline {a.baseline}")
    for name, v in med.items():
        print(f"  {name:<7} {v:8.2f} ms per update (median; rounds {', '.join(f'{x:.2f}' for x in times[name])})")
    print(f"  ratio now / before: {med['now'] / med['before']:.3f}")


if __name__ == "__main__":
    main()
