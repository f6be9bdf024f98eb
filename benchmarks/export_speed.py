"""Per-step latency of a deployed policy: `Policy.act` (odt) against the `odt export` files run by
TorchScript and by onnxruntime, one environment, one step at a time (a controller's loop).

    python benchmarks/export_speed.py [--threads 1] [--steps 500] [--reps 5]

The model is cpu-small's (128 wide, 3 layers, context 5) on Hopper's dimensions, freshly
initialised (latency does not depend on the weights). Every action of the three is checked equal
before timing. Prints the median microseconds per step over --reps repetitions and the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from odt.export import ExportedPolicy, example_inputs, export_onnx
from odt.models.transformer import DecisionTransformer, ModelSpec
from odt.policy import Policy
from odt.scaling import Scaling

S, A, C = 11, 3, 5


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    warnings.simplefilter("ignore")  # the tracer's and exporter's notes
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = DecisionTransformer(ModelSpec(obs_dim=S, act_dim=A, embed_dim=128, n_layer=3, n_head=1,
                                          context_len=20)).eval()
    policy = Policy(model, Scaling.unit(S, A), rtg_scale=1000.0, context=C)
    exported = ExportedPolicy([model], Scaling.unit(S, A), 1000.0, C).eval()
    meta = {"context": C, "obs_dim": S, "act_dim": A, "g_eval": 3600.0}
    with torch.no_grad():
        script = torch.jit.trace(exported, example_inputs(meta, 1), check_trace=False)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        export_onnx(exported, meta, Path(d) / "p.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        session = ort.InferenceSession(str(Path(d) / "p.onnx"), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(a.steps, S)).astype(np.float32)
    rew = rng.uniform(0, 3, a.steps).astype(np.float32)

    def run_policy():
        policy.reset(3600.0)
        return [policy.act(obs[i], None if i == 0 else rew[i - 1]) for i in range(a.steps)]

    def run_torch(fn):
        def go():
            state = (torch.zeros(1, C, S), torch.zeros(1, C, A), torch.zeros(1, C, 1), torch.zeros(1, dtype=torch.int64))
            out = []
            with torch.no_grad():
                for i in range(a.steps):
                    act, *state = fn(torch.from_numpy(obs[i:i + 1]), torch.tensor([0.0 if i == 0 else rew[i - 1]]),
                                     torch.tensor([3600.0]), *state)
                    out.append(act[0].numpy())
            return out
        return go

    def run_onnx():
        state = [np.zeros((1, C, S), np.float32), np.zeros((1, C, A), np.float32), np.zeros((1, C, 1), np.float32),
                 np.zeros(1, np.int64)]
        names = [i.name for i in session.get_inputs()]
        out = []
        for i in range(a.steps):
            feed = dict(zip(names, [obs[i:i + 1], np.array([0.0 if i == 0 else rew[i - 1]], np.float32),
                                    np.array([3600.0], np.float32), *state]))
            act, *state = session.run(None, feed)
            out.append(act[0])
        return out

    runs = {"Policy.act": run_policy, "TorchScript": run_torch(script), "ExportedPolicy (eager)": run_torch(exported),
            "onnxruntime": run_onnx}
    reference = np.array(run_policy())
    for name, fn in runs.items():
        np.testing.assert_allclose(np.array(fn()), reference, atol=1e-4, err_msg=name)
    print(f"{a.steps} steps, context {C}, threads {a.threads}; median of {a.reps} repetitions")
    base = None
    for name, fn in runs.items():
        times = []
        for _ in range(a.reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) / a.steps * 1e6)
        med = statistics.median(times)
        base = base or med
        print(f"{name:<24}{med:>9.0f} us/step   {base / med:5.2f}x Policy.act's speed")


if __name__ == "__main__":
    main()
