"""Speed of a training step and of a batched action, against the reference implementation.

    python benchmarks/speed.py [--threads 1] [--reps 20] [--device cpu|cuda] [--only small|paper|act|tasks]
                               [--precisions fp32,bf16] [--compile [MODE]]

It also says which precision ``--precision auto`` picks on this machine and why, and projects the
wall time of the paper's hopper-medium finetuning (``odt run --preset hopper-medium``) from the
paper-size step and the acting times measured here. ``tasks`` times cpu-small's update, the batched
action and a real MuJoCo step for Hopper (11-dimensional observations, 3 actions) against Walker2d
and HalfCheetah (17 and 6), and the rollout's share of one of the CPU presets' rounds (4 episodes
of up to 1000 steps in one vector environment, then 100 updates). The peer comparison (TorchRL) and the GEMM
floor are in benchmarks/peer.py.

Reference figures (the official ODT code, measured on the project's 2-core machines):
0.21 s per step at embed 128 / 3 layers / 1 head / batch 64 / K 20; 11 s per step at the paper's
512 / 4 / 4 / batch 256 (one thread); 12.7 ms per batched action for 10 environments at context 5.
Targets: <= 2/3 and <= 1/2 of the step times, <= 3 ms per batched action.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from odt.algos.learner import Learner
from odt.config import OptimSettings
from odt.data.buffer import Batch
from odt.envs.make import make_vector_env
from odt.models.transformer import DecisionTransformer, ModelSpec
from odt.config import preset
from odt.policy import Policy
from odt.scaling import Scaling
from odt.precision import resolve_precision

REFERENCE = {"small": 0.21, "paper": 11.0, "act": 12.7e-3}
TARGET = {"small": 2 / 3, "paper": 1 / 2, "act": 3e-3 / 12.7e-3}
SIZES = {"small": (128, 3, 1, 64), "paper": (512, 4, 4, 256)}
OBS, ACT, K = 11, 3, 20  # Hopper


def cpu_name() -> str:
    try:
        info = open("/proc/cpuinfo").read()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = set(next(line for line in info.splitlines() if line.startswith("flags")).split())
        kind = ("AMX" if "amx_bf16" in flags else "AVX512_BF16, no AMX" if "avx512_bf16" in flags else
                "AVX-512, no BF16" if "avx512f" in flags else "AVX2 only" if "avx2" in flags else "no AVX2")
        return f"{name} ({kind})"
    except (OSError, StopIteration):  # not Linux
        return platform.processor() or platform.machine()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_train_step(size: str, precision: str, reps: int, device: str, compile_: str = "off",
                    obs_dim: int = OBS, act_dim: int = ACT) -> float:
    d, n_layer, n_head, B = SIZES[size]
    torch.manual_seed(0)
    spec = ModelSpec(obs_dim=obs_dim, act_dim=act_dim, embed_dim=d, n_layer=n_layer, n_head=n_head, dropout=0.1, context_len=K)
    model = DecisionTransformer(spec).to(device)
    # what `odt run --compile MODE` does
    learner = Learner(model, "odt", OptimSettings(lr=1e-4, weight_decay=5e-4, warmup_steps=10_000, grad_clip=0.25),
                      precision=precision, compile=compile_)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, K + 1, (B,), generator=g)
    mask = (torch.arange(K)[None] < lengths[:, None]).float()
    batch = Batch(states=torch.randn(B, K, obs_dim, generator=g),
                  actions=torch.rand(B, K, act_dim, generator=g) * 1.8 - 0.9,
                  rtg=torch.rand(B, K, 1, generator=g) * 3.6, timesteps=torch.zeros(B, K, dtype=torch.long),
                  mask=mask, rewards=torch.zeros(B, K)).to(device)
    for _ in range(2 if compile_ == "off" else 3):
        learner.update(batch)
    times = []
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        learner.update(batch)
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_act(reps: int, device: str, n_envs: int = 10, context: int = 5, size: str = "small",
             obs_dim: int = OBS, act_dim: int = ACT) -> float:
    torch.manual_seed(0)
    d, n_layer, n_head, _ = SIZES[size]
    model = DecisionTransformer(ModelSpec(obs_dim=obs_dim, act_dim=act_dim, embed_dim=d, n_layer=n_layer,
                                          n_head=n_head, context_len=K)).to(device)
    policy = Policy(model, Scaling.unit(obs_dim, act_dim), 1000.0, context)
    obs = np.random.default_rng(0).normal(size=(n_envs, obs_dim)).astype(np.float32)
    policy.reset(3600.0, n=n_envs)
    for _ in range(context + 5):  # fill the context
        policy.act(obs, np.ones(n_envs))
    times = []
    for _ in range(max(reps, 100)):
        if policy._t >= model.spec.max_ep_len - 1:
            policy.reset(3600.0, n=n_envs)
            for _ in range(context):
                policy.act(obs, np.ones(n_envs))
        t = time.perf_counter()
        policy.act(obs, np.ones(n_envs))
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


TASKS = {"Hopper-v5": (11, 3), "Walker2d-v5": (17, 6), "HalfCheetah-v5": (17, 6)}


def time_env_step(env_id: str, n_envs: int, steps: int = 300) -> float:
    """Median seconds of one step of ``n_envs`` real MuJoCo environments (random actions), as a
    round's vector environment steps them."""
    envs = make_vector_env(env_id, n_envs)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    times = []
    for _ in range(steps):
        a = rng.uniform(-1, 1, (n_envs, *envs.single_action_space.shape)).astype(np.float32)
        t = time.perf_counter()
        envs.step(a)
        times.append(time.perf_counter() - t)
    envs.close()
    return statistics.median(times)


def task_costs(reps: int, device: str) -> None:
    """Do 17-dimensional observations change the update's cost, or the rollout's share of a round?"""
    print(f"{'task (obs, act)':<26}{'update':>10}{'x Hopper':>10}{'act, 4 envs':>13}{'env step':>10}"
          f"{'rollout share':>15}")
    base = None
    for env_id, (obs, act) in TASKS.items():
        step = time_train_step("small", "fp32", reps, device, obs_dim=obs, act_dim=act)
        base = base or step
        act4 = time_act(reps, device, n_envs=4, obs_dim=obs, act_dim=act)
        env4 = time_env_step(env_id, 4)
        # A round: 4 episodes of up to 1000 steps stepped together (1000 batched actions and vector
        # steps), then 100 updates.
        rollout, updates = 1000 * (act4 + env4), 100 * step
        print(f"{env_id + f' ({obs}, {act})':<26}{step * 1e3:>8.1f}ms{step / base:>10.2f}{act4 * 1e3:>11.2f}ms"
              f"{env4 * 1e3:>8.2f}ms{rollout / (rollout + updates):>14.0%}", flush=True)


def project_paper_run(step: float, act1: float, act10: float, episode_len: int) -> float:
    """Seconds for `odt run --preset hopper-medium`: its pretraining updates, one round of
    updates_per_round updates per episode of ``episode_len`` steps until online_steps, one action
    per online step (1 environment), and every eval_every rounds eval_episodes episodes acted as
    one batch (timed for 10 environments). MuJoCo's own stepping (about 0.1 ms a step) is added."""
    cfg = preset("hopper-medium")
    rounds = cfg.online_steps / (episode_len * cfg.episodes_per_round)
    updates = cfg.pretrain_updates + rounds * cfg.updates_per_round
    evals = rounds / cfg.eval_every + 2
    env_steps = cfg.online_steps + evals * cfg.eval_episodes * episode_len
    return updates * step + cfg.online_steps * act1 + evals * episode_len * act10 + env_steps * 1e-4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=["small", "paper", "act", "tasks"], action="append")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--compile", nargs="?", const="default", default="off",
                    choices=["off", "default", "reduce-overhead", "max-autotune"],
                    help="also time the step as `odt run --compile MODE` runs it (reduce-overhead: CUDA graphs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    which = args.only or ["small", "paper", "act", "tasks"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"{cpu_name()}, medians over {args.reps} repetitions")
    auto, why, _ = resolve_precision("auto", args.device)
    print(f"--precision auto picks {auto} here ({why})")
    paper_step = {}
    print(f"{'benchmark':<34}{'median':>12}{'reference':>12}{'ratio':>8}{'target':>8}  ok")
    for size in ("small", "paper"):
        if size not in which:
            continue
        variants = [(p, "off") for p in args.precisions.split(",")]
        variants += [(p, args.compile) for p in args.precisions.split(",") if args.compile != "off"]
        for precision, comp in variants:
            t = time_train_step(size, precision, args.reps, args.device, comp)
            ratio = t / REFERENCE[size]
            name = f"train step {size} {precision}{'' if comp == 'off' else ' compiled ' + comp}"
            print(f"{name:<34}{t:>11.4f}s{REFERENCE[size]:>11.2f}s{ratio:>8.2f}{TARGET[size]:>8.2f}  "
                  f"{'yes' if ratio <= TARGET[size] else 'NO'}", flush=True)
            if args.device.startswith("cuda"):
                print(f"{'':<34}{1 / t:>10.1f} steps/s")
            if size == "paper":
                key = precision if comp == "off" else f"{precision} compiled {comp}"
                paper_step[key] = t
    if "act" in which:
        t = time_act(args.reps, args.device)
        ratio = t / REFERENCE["act"]
        print(f"{'act: 10 envs, context 5, small':<34}{t * 1e3:>10.2f}ms{REFERENCE['act'] * 1e3:>10.1f}ms"
              f"{ratio:>8.2f}{TARGET['act']:>8.2f}  {'yes' if ratio <= TARGET['act'] else 'NO'}")
    if "tasks" in which:
        task_costs(args.reps, args.device)
    if paper_step:
        act1, act10 = (time_act(args.reps, args.device, n, size="paper") for n in (1, 10))
        print(f"act at the paper's size, context 5: {act1 * 1e3:.2f} ms for 1 env, {act10 * 1e3:.2f} ms for 10")
        for precision, step in paper_step.items():
            hours = [project_paper_run(step, act1, act10, L) / 3600 for L in (1000, 500)]
            print(f"projected `odt run --preset hopper-medium` in {precision}: {hours[0]:.1f} h (episodes of 1000 "
                  f"steps: 200 rounds) to {hours[1]:.1f} h (500 steps: 400 rounds), one seed")


if __name__ == "__main__":
    main()
