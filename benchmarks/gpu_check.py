"""The first thing to run on a lent GPU: does odt run there, and what does an update cost.

    python benchmarks/gpu_check.py --device cuda --out DIR          # at most 8 minutes on one H100
    python benchmarks/gpu_check.py --device cpu --tiny --out DIR    # the same steps, small (the suite runs it)

Each step is timed and guarded (a failure is recorded, and the next step runs):
1. runs: a tiny `odt run --device D` of odt and of vidt, killed (SIGKILL) after its first online
   round, then `--resume`d to the end; `odt eval` on D; `odt export` to TorchScript and ONNX, each
   run on D's inputs and compared with the CPU's;
2. update: the paper-size update (512/4/4, batch 256, K 20) in bf16 and in fp32 (TF32 on a GPU):
   the update alone on a fixed batch, and a whole round (windows drawn from a replay buffer on the
   device, the round's metrics read once), in milliseconds, with the profiler's split between the
   device's work and the host's;
3. compile: one `--compile reduce-overhead` step (the first, compiling, and the next ones);
4. projection: the paper's hopper-medium run (`--preset hopper-medium`) from these figures;
5. atari: the DT paper's Atari update (128/6/8, batch 128, K 30, 4 stacked 84x84 frames through
   its convolutions), and `--preset atari-breakout`'s pretraining projected from it.
``--only STEP[,STEP]`` runs some of them (e.g. ``--device cpu --only atari`` on a CPU).
DIR/summary.json holds every figure and error; the same goes to stdout as a table. ``--tiny`` uses a
small model and, on a CPU, torch.compile's aot_eager backend (no code generation), so that the suite
runs every step in about a minute."""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import odt
from odt.algos.learner import Learner
from odt.config import Config, OptimSettings, TD3Settings, preset
from odt.data.buffer import ReplayBuffer, Sampling
from odt.data.formats import save_npz
from odt.data.generate import collect
from odt.data.trajectories import Episode
from odt.models.transformer import DecisionTransformer, ModelSpec
from odt.policy import Policy
from odt.scaling import Scaling

OBS, ACT, K = 11, 3, 20  # Hopper
BUDGET_S = 7 * 60  # the steps stop starting after this: the check ends within 8 minutes


class Check:
    """Every step's figures or error, written to DIR/summary.json after each step."""

    def __init__(self, out: Path, device: str, tiny: bool):
        self.out, self.device, self.tiny, self.start = out, device, tiny, time.time()
        self.summary: dict = {"device": device, "tiny": tiny, "steps": {}}

    def step(self, name: str, fn, *args) -> dict | None:
        if time.time() - self.start > BUDGET_S:
            self.summary["steps"][name] = {"skipped": f"past the {BUDGET_S} s budget"}
            return None
        t = time.time()
        try:
            result = fn(*args)
            entry = {**result, "seconds": round(time.time() - t, 1)}
        except Exception as e:  # a step's failure is a finding: record it, go on
            result, entry = None, {"error": f"{type(e).__name__}: {e}"[:2000],
                                   "traceback": traceback.format_exc()[-3000:], "seconds": round(time.time() - t, 1)}
        self.summary["steps"][name] = entry
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")
        print(f"[gpu_check] {name}: {'error' if 'error' in entry else 'ok'} ({entry['seconds']} s)", flush=True)
        return result


def environment(device: str) -> dict:
    info = {"torch": torch.__version__, "odt": odt.__version__, "python": sys.version.split()[0],
            "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, bf16=torch.cuda.is_bf16_supported())
    return info


# --- 1. a tiny run, killed and resumed; eval and exports on the device ---------------------------

def _odt(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "odt.cli", *args], capture_output=True, text=True, timeout=timeout)


def _rounds(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count('"event": "round"') if path.is_file() else 0


def tiny_run(algo: str, data: Path, work: Path, device: str) -> dict:
    run = work / algo
    args = ["run", "--preset", "cpu-small", "--algo", algo, "--env", "Hopper-v5", "--dataset", str(data),
            "--embed-dim", "32", "--n-layer", "1", "--n-head", "1", "--batch-size", "16", "--pretrain-updates", "10",
            "--online-steps", "400", "--updates-per-round", "3", "--episodes-per-round", "1", "--eval-every", "1",
            "--eval-episodes", "2", "--checkpoint-every", "1", "--device", device, "--threads", "2", "--no-progress",
            "--out", str(run), *(["--critic-pretrain-updates", "4"] if algo == "vidt" else [])]
    proc = subprocess.Popen([sys.executable, "-m", "odt.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while _rounds(run) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    killed_at = _rounds(run)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _odt("run", "--resume", str(run))
    out = {"killed_after_rounds": killed_at, "resume_exit": resumed.returncode}
    if resumed.returncode:
        raise RuntimeError(f"--resume exited {resumed.returncode}: {resumed.stderr.strip()[-800:]}")
    summary = json.loads((run / "summary.json").read_text())
    out.update(final_return=summary["final"]["return_mean"], resolved=[summary.get("device"), summary.get("precision")])
    ev = _odt("eval", "--run", str(run), "--device", device, "--episodes", "2", "--json")
    if ev.returncode:
        raise RuntimeError(f"odt eval exited {ev.returncode}: {ev.stderr.strip()[-800:]}")
    out["eval_return"] = json.loads(ev.stdout.strip().splitlines()[-1])["return_mean"]
    out.update(exports(run, device))
    return out


def exports(run: Path, device: str) -> dict:
    """Both export formats, run on the device's inputs and compared with the policy on the CPU."""
    from odt.export import example_inputs, exported_policy

    policy, meta = exported_policy(run, Config.load(run / "config.json"))
    inputs = example_inputs(meta, n=3)
    with torch.no_grad():
        expected = policy(*inputs)[0]
    out = {}
    ts = run / "policy.pt"
    r = _odt("export", str(run), "--out", str(ts))
    if r.returncode:
        raise RuntimeError(f"odt export exited {r.returncode}: {r.stderr.strip()[-800:]}")
    module = torch.jit.load(str(ts), map_location=device)
    with torch.no_grad():
        action = module(*(x.to(device) for x in inputs))[0]
    out["torchscript"] = {"device": str(action.device), "max_abs_diff": float((action.cpu() - expected).abs().max())}
    onnx_file = run / "policy.onnx"
    r = _odt("export", str(run), "--format", "onnx", "--out", str(onnx_file))
    if r.returncode:
        out["onnx"] = {"skipped": r.stderr.strip().splitlines()[-1][:300] if r.stderr.strip() else f"exit {r.returncode}"}
        return out
    try:
        import onnxruntime as ort
    except ImportError:
        out["onnx"] = {"exported": True, "skipped": "onnxruntime is not installed here"}
        return out
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
                 and (p != "CUDAExecutionProvider" or device.startswith("cuda"))]
    session = ort.InferenceSession(str(onnx_file), providers=providers)
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})[0]
    out["onnx"] = {"provider": session.get_providers()[0], "max_abs_diff": float(np.abs(got - expected.numpy()).max())}
    return out


# --- 2. the update, alone and as a round, with the profiler's split ------------------------------

def _learner(size: tuple, algo: str, precision: str, device: str, compile_: str = "off") -> Learner:
    d, layers, heads, _ = size
    torch.manual_seed(0)
    head = "deterministic" if algo == "vidt" else "tanh_gaussian"
    spec = ModelSpec(obs_dim=OBS, act_dim=ACT, embed_dim=d, n_layer=layers, n_head=heads, dropout=0.1,
                     context_len=K, action_head=head)
    model = DecisionTransformer(spec).to(device)
    td3 = TD3Settings() if algo == "vidt" else None
    return Learner(model, "dt" if algo == "vidt" else "odt", OptimSettings(lr=1e-4, warmup_steps=100), td3,
                   precision=precision, compile=compile_)


def _buffer(device: str, episodes: int, length: int, keep_next: bool) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    eps = [Episode(rng.normal(size=(length, OBS)).astype(np.float32), rng.uniform(-1, 1, (length, ACT)).astype(np.float32),
                   rng.uniform(0, 3, length).astype(np.float32), truncated=True,
                   final_observation=rng.normal(size=OBS).astype(np.float32)) for _ in range(episodes)]
    scaling = Scaling(np.zeros(OBS), np.ones(OBS), -np.ones(ACT), np.ones(ACT))
    sampling = Sampling(1000.0, keep_next, None, True, 0.99, 0.0)
    buf = ReplayBuffer(len(eps), scaling, sampling, eps, device)
    buf.fill(eps)
    return buf


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, n: int, device: str) -> float:
    """Milliseconds per call over n calls, the device's queue drained at both ends."""
    _sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / n * 1e3


def _split(fn, n: int, device: str) -> dict:
    """The profiler's split of n calls: the device's kernel time against the wall time (the rest is
    the host's, or the device waiting on it)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    _sync(device)
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(n):
            fn()
        _sync(device)
    wall = (time.perf_counter() - t) / n * 1e3
    events = prof.key_averages()
    device_ms = sum(getattr(e, "self_device_time_total", 0) for e in events) / 1e3 / n
    kernels = sum(e.count for e in events if getattr(e, "self_device_time_total", 0) > 0) / n
    return {"wall_ms": round(wall, 3), "device_ms": round(device_ms, 3), "kernels_per_call": round(kernels, 1),
            "device_busy": round(device_ms / wall, 3) if wall else None}


def updates(size: tuple, device: str, reps: int, buffer_shape: tuple[int, int]) -> dict:
    out = {}
    B = size[3]
    precisions = ("bf16", "fp32") if device.startswith("cuda") or size[0] <= 64 else ("fp32",)
    for algo in ("odt", "vidt"):
        buf = _buffer(device, *buffer_shape, keep_next=algo == "vidt")
        for precision in precisions:
            learner = _learner(size, algo, precision, device)
            rng = np.random.default_rng(0)
            batch = buf.sample(B, K, rng)
            calls = learner.calls_per_actor_update

            def update():
                for _ in range(calls):
                    learner.update(batch)

            def one_round():
                for _ in range(reps * calls):
                    learner.update(buf.sample(B, K, rng))
                learner.read()

            one_round()  # warm up (allocator, kernels' first launches)
            entry = {"update_ms": round(_timed(update, reps, device), 3),
                     "round_ms_per_update": round(_timed(one_round, 1, device) / reps, 3),
                     "update_split": _split(update, max(2, reps // 4), device),
                     "round_split": _split(one_round, 1, device)}
            entry["round_split"] = {k: v / reps if k in ("wall_ms", "device_ms", "kernels_per_call") and v else v
                                    for k, v in entry["round_split"].items()}
            learner.read()
            out[f"{algo} {precision}"] = entry
    return out


def compiled_step(size: tuple, device: str, tiny: bool) -> dict:
    if tiny and not device.startswith("cuda"):
        Learner.compile_backend = "aot_eager"  # no code generation: the CPU suite checks the graphs alone
    learner = _learner(size, "odt", "bf16" if device.startswith("cuda") else "fp32", device, "reduce-overhead")
    batch = _buffer(device, 8, 200, False).sample(size[3], K, np.random.default_rng(0))
    first = _timed(lambda: learner.update(batch), 1, device)
    steady = _timed(lambda: learner.update(batch), 5, device)
    learner.read()
    return {"backend": learner.compile_backend, "first_step_s": round(first / 1e3, 1), "step_ms": round(steady, 3),
            "graphs": len(learner._compiled_fns)}


def act_ms(size: tuple, device: str, reps: int) -> float:
    learner = _learner(size, "odt", "fp32", device)
    policy = Policy(learner.model.eval(), Scaling.unit(OBS, ACT), 1000.0, 5, "sample", 0.0,
                    torch.Generator(device=device).manual_seed(0))
    policy.reset(3600.0)
    obs = np.zeros(OBS, np.float32)
    return _timed(lambda: policy.act(obs, 1.0), reps, device)


def projection(figures: dict, act: float) -> dict:
    """The paper's hopper-medium run: its pretraining and its rounds' updates at the measured round
    cost, and one action a step; episodes taken at 1000 steps (a finetuned hopper's length), so
    that the rounds, and their updates, are the fewest the budget allows."""
    cfg = preset("hopper-medium")
    rounds = cfg.online_steps / (1000 * cfg.episodes_per_round)
    out = {}
    for key, entry in figures.items():
        if key.startswith("odt") and "round_ms_per_update" in entry:
            updates_total = cfg.pretrain_updates + rounds * cfg.updates_per_round
            seconds = updates_total * entry["round_ms_per_update"] / 1e3 + cfg.online_steps * act / 1e3
            out[key] = {"updates": int(updates_total), "hours": round(seconds / 3600, 2)}
    return {"act_ms": round(act, 3), "runs": out}


def atari_update(device: str, tiny: bool, reps: int) -> dict:
    """The DT paper's Atari update on frames drawn from a buffer of bytes; the atari-breakout
    preset's pretraining (its updates at this cost) projected from it."""
    d, layers, heads, B, K = (16, 1, 1, 4, 4) if tiny else (128, 6, 8, 128, 30)
    frames, width = (4, 84, 84), 4 * 84 * 84
    torch.manual_seed(0)
    spec = ModelSpec(obs_dim=width, act_dim=4, embed_dim=d, n_layer=layers, n_head=heads, dropout=0.1,
                     context_len=K, frames=frames, action_head="categorical", max_ep_len=27000)
    learner = Learner(DecisionTransformer(spec).to(device), "dt", OptimSettings(lr=6e-4, warmup_steps=100))
    rng = np.random.default_rng(0)
    eps = [Episode(rng.integers(0, 256, (200, width), dtype=np.uint8), np.eye(4, dtype=np.float32)[rng.integers(4, size=200)],
                   rng.integers(0, 2, 200).astype(np.float32), truncated=True) for _ in range(8 if tiny else 50)]
    scaling = Scaling(np.zeros(width), np.full(width, 255.0), np.zeros(4), np.ones(4), discrete=True)
    buf = ReplayBuffer(len(eps), scaling, Sampling(1.0, False, None, True, 0.99, 0.0), eps, device)
    buf.fill(eps)
    learner.update(buf.sample(B, K, rng))  # warm up
    ms = _timed(lambda: learner.update(buf.sample(B, K, rng)), reps, device)
    learner.read()
    updates = preset("atari-breakout").pretrain_updates
    return {"size": f"{d}/{layers}/{heads}, batch {B}, K {K}", "round_ms_per_update": round(ms, 3),
            "pretraining": {"updates": updates, "hours": round(updates * ms / 3.6e6, 2)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="a small model and few steps (the suite's check)")
    ap.add_argument("--only", default=None, help="comma-separated steps: runs, update, compile, projection, atari")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else {"runs", "update", "compile", "projection", "atari"}
    check = Check(a.out, a.device, a.tiny)
    size = (32, 1, 1, 16) if a.tiny else (512, 4, 4, 256)
    reps = 4 if a.tiny else 30
    buffer_shape = (20, 200) if a.tiny else (1000, 1000)
    check.step("environment", environment, a.device)
    if "runs" in only:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
            work = Path(work)
            data = work / "hopper-random.npz"
            save_npz(collect("Hopper-v5", 3000, 0, None, name="gpu-check", log=lambda line: None), data)
            for algo in ("odt", "vidt"):
                check.step(f"run {algo}", tiny_run, algo, data, work, a.device)
    figures = (check.step("update", updates, size, a.device, reps, buffer_shape) if "update" in only else None) or {}
    if "compile" in only:
        check.step("compile", compiled_step, size, a.device, a.tiny)
    if "projection" in only:
        check.step("projection", lambda: projection(figures, act_ms(size, a.device, 20 if a.tiny else 200)))
    if "atari" in only:
        check.step("atari", atari_update, a.device, a.tiny, 2 if a.tiny else 10)
    print(json.dumps(check.summary["steps"], indent=1)[:6000])
    errors = [n for n, s in check.summary["steps"].items() if "error" in s]
    print(f"[gpu_check] {len(errors)} step(s) failed{': ' + ', '.join(errors) if errors else ''}; "
          f"{a.out / 'summary.json'}; {time.time() - check.start:.0f} s")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
