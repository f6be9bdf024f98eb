"""odt's training update against TorchRL's, against this machine's GEMM floor, and TD3's against ODT's.

    python benchmarks/peer.py [--threads 1] [--reps 15] [--size small|paper] [--precision fp32|bf16]
                              [--breakdown]

Equal settings on both sides: Hopper's dimensions, K 20, batch 64 (paper: 256), embed 128 / 3 layers
/ 1 head (paper: 512 / 4 / 4), MLP 4x with ReLU, dropout 0.1 everywhere, a tanh-Gaussian policy
with log-std in [-5, 2], NLL - alpha * entropy with a learned temperature (one Monte Carlo sample),
odt's LAMB (lr 1e-4, weight decay 5e-4) and gradient clipping at 0.25 on both. TorchRL's side is
its ODT as its sota-implementations build it: `OnlineDTActor` in a `ProbabilisticActor` with
`TanhNormal`, `OnlineDTLoss`. The two updates alternate, so that machine noise hits both.

The floor: every matrix multiply of one odt update (recorded at the ATen level with their shapes,
strides and dtypes: forward and backward) replayed alone on fresh tensors; its time is what the
update would take if everything else were free, and FLOPs over it is this core's GEMM rate on
exactly those shapes. Targets (cpu-small shape, one thread, fp32): odt / TorchRL <= 0.6,
odt / floor <= 1.2, a TD3 actor update (policy_delay 2: two critic steps and one actor step)
<= 1.5x an ODT update.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from odt.algos.learner import Learner
from odt.config import OptimSettings
from odt.algos.lamb import Lamb
from odt.config import TD3Settings
from odt.data.buffer import Batch
from odt.models.transformer import DecisionTransformer, ModelSpec
from speed import cpu_name  # benchmarks/ is on the path when a script in it runs

OBS, ACT, K = 11, 3, 20
SIZES = {"small": (128, 3, 1, 64), "paper": (512, 4, 4, 256)}
LR, WD, CLIP = 1e-4, 5e-4, 0.25


def make_batch(B: int, next_too: bool = False) -> Batch:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, K + 1, (B,), generator=g)
    mask = (torch.arange(K)[None] < lengths[:, None]).float()

    def window():
        return dict(states=torch.randn(B, K, OBS, generator=g), actions=torch.rand(B, K, ACT, generator=g) * 1.8 - 0.9,
                    rtg=torch.rand(B, K, 1, generator=g) * 3.6)
    w = window()
    extra = {}
    if next_too:
        n = window()
        extra = dict(next_states=n["states"], next_actions=n["actions"], next_rtg=n["rtg"],
                     terminals=torch.zeros(B, K), critic_mask=mask)
    return Batch(**w, timesteps=torch.zeros(B, K, dtype=torch.long), mask=mask, rewards=torch.rand(B, K), **extra)


def odt_learner(size: str, precision: str, algo: str = "odt") -> Learner:
    d, n_layer, n_head, _ = SIZES[size]
    torch.manual_seed(0)
    head = "deterministic" if algo == "vidt" else "tanh_gaussian"
    model = DecisionTransformer(ModelSpec(obs_dim=OBS, act_dim=ACT, embed_dim=d, n_layer=n_layer, n_head=n_head, dropout=0.1, context_len=K,
                                          action_head=head))
    td3 = TD3Settings() if algo in ("vidt", "odt-td3") else None
    return Learner(model, "dt" if algo == "vidt" else "odt", OptimSettings(lr=LR, weight_decay=WD, warmup_steps=1, grad_clip=CLIP),
                   td3=td3, precision=precision)


class TorchRLUpdate:
    """TorchRL's online DT update, built as its sota-implementations/decision_transformer does."""

    def __init__(self, size: str, batch: Batch):
        from tensordict import TensorDict
        from tensordict.nn import TensorDictModule
        from torchrl.data import Bounded
        from torchrl.modules import OnlineDTActor, ProbabilisticActor, TanhNormal
        from torchrl.objectives import OnlineDTLoss

        d, n_layer, n_head, B = SIZES[size]
        torch.manual_seed(0)
        config = OnlineDTActor.default_config()
        config.n_embd, config.n_layer, config.n_head, config.n_inner = d, n_layer, n_head, 4 * d
        config.n_positions = 3 * K
        actor = OnlineDTActor(state_dim=OBS, action_dim=ACT, transformer_config=config)
        module = TensorDictModule(actor, in_keys=["observation", "action", "return_to_go"], out_keys=["loc", "scale"])
        spec = Bounded(-torch.ones(ACT), torch.ones(ACT), shape=(ACT,))
        self.policy = ProbabilisticActor(module, in_keys=["loc", "scale"], out_keys=["action"], spec=spec,
                                         distribution_class=TanhNormal,
                                         distribution_kwargs={"low": -1.0, "high": 1.0},
                                         return_log_prob=False, default_interaction_type="random")
        self.loss = OnlineDTLoss(self.policy, alpha_init=0.1, target_entropy=-float(ACT))
        self.optimizer = Lamb(self.policy.parameters(), lr=LR, weight_decay=WD, eps=1e-8)
        self.alpha_optimizer = torch.optim.Adam([self.loss.log_alpha], lr=1e-4)
        self.data = TensorDict({"observation": batch.states, "action": batch.actions, "return_to_go": batch.rtg},
                               batch_size=[B, K])

    def __call__(self) -> None:
        self.policy.train()
        out = self.loss(self.data)
        actor_loss = out["loss_log_likelihood"] + out["loss_entropy"]
        self.optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), CLIP)
        self.optimizer.step()
        self.alpha_optimizer.zero_grad(set_to_none=True)
        out["loss_alpha"].backward()
        self.alpha_optimizer.step()


class GemmRecorder(TorchDispatchMode):
    """Every matrix multiply the code inside runs: (op, args with shapes/strides/dtypes)."""

    OPS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.OPS:
            meta = [(a.shape, a.stride(), a.dtype) if isinstance(a, torch.Tensor) else a for a in args]
            self.calls.append((func, meta, dict(kwargs)))
        return func(*args, **kwargs)


def gemm_flops(meta) -> int:
    """2 M K N per product, for each product of a bmm's batch (addmm's bias is not counted)."""
    a, b = [m[0] for m in meta if isinstance(m, tuple)][-2:]  # addmm: (bias, a, b); mm, bmm: (a, b)
    return 2 * a.numel() * b[-1]


def gemm_floor(update, reps: int) -> tuple[float, float, int]:
    """(seconds, FLOPs, number of GEMMs): the update's matrix multiplies alone, median of reps."""
    with GemmRecorder() as rec:
        update()
    flops = sum(gemm_flops(meta) for _, meta, _ in rec.calls)
    args = [(f, [torch.empty_strided(m[0], m[1], dtype=m[2]).normal_() if isinstance(m, tuple) else m for m in meta], kw)
            for f, meta, kw in rec.calls]

    def replay():
        for f, a, kw in args:
            f(*a, **kw)
    replay()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        replay()
        times.append(time.perf_counter() - t)
    return statistics.median(times), float(flops), len(args)


KINDS = [  # (kind, ATen ops): the first that matches names an op's self time
    ("matrix multiplies", {"aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu"}),
    ("ReLU forward and backward", {"aten::clamp_min", "aten::threshold_backward"}),
    ("dropout masks (random bits, compare)", {"aten::random_", "aten::ge"}),
    ("LayerNorm forward and backward", {"aten::native_layer_norm", "aten::native_layer_norm_backward"}),
    ("attention softmax and mask", {"aten::_softmax", "aten::_softmax_backward_data", "aten::masked_fill_"}),
    ("copies: addmm's bias into its output, token interleaving", {"aten::copy_", "aten::cat"}),
    ("multiplies, adds (dropout, loss, LAMB, clipping)", {"aten::mul", "aten::mul_", "aten::add", "aten::add_",
                                                         "aten::div", "aten::div_", "aten::lerp_", "aten::sqrt"}),
]


def breakdown(update, median: float) -> list[tuple[str, float]]:
    """Milliseconds of one update by kind of op: the profiler's self times over 10 updates,
    scaled to the unprofiled median (the profiler adds its own overhead)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            update()
    kinds: dict[str, float] = {}
    for e in prof.events():
        kind = next((k for k, ops in KINDS if e.name in ops), "everything else (autograd, small ops)")
        kinds[kind] = kinds.get(kind, 0.0) + e.self_cpu_time_total
    scale = median * 1e3 / (sum(kinds.values()) / 10 / 1e3)
    return sorted(((k, v / 10 / 1e3 * scale) for k, v in kinds.items()), key=lambda kv: -kv[1])


def alternate(fns: dict, reps: int, warmup: int = 3) -> dict[str, float]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--size", choices=list(SIZES), default="small")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--no-torchrl", action="store_true", help="skip the peer (torchrl and transformers not installed)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also: an ODT update's milliseconds by kind of op, and a TD3 update's parts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    B = SIZES[args.size][3]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {cpu_name()}, "
          f"{args.size} shape {SIZES[args.size][:3]} batch {B}, {args.precision}, medians of {args.reps}")
    batch, td3_batch = make_batch(B), make_batch(B, next_too=True)
    learners = {a: odt_learner(args.size, args.precision, a) for a in ("odt", "vidt", "odt-td3")}

    def step(algo):
        learner, b = learners[algo], batch if algo == "odt" else td3_batch
        return lambda: [learner.update(b) for _ in range(learner.calls_per_actor_update)]
    fns = {a: step(a) for a in learners}
    if not args.no_torchrl:
        fns["torchrl"] = TorchRLUpdate(args.size, batch)
    t = alternate(fns, args.reps)
    floor, flops, n_gemm = gemm_floor(fns["odt"], args.reps)
    rows = [("odt ODT update", t["odt"], "")]
    if "torchrl" in t:
        r = t["odt"] / t["torchrl"]
        rows.append(("TorchRL OnlineDTActor + OnlineDTLoss", t["torchrl"], f"odt / TorchRL {r:.2f} (target <= 0.6)"))
    rows.append((f"GEMM floor ({n_gemm} GEMMs, {flops / 1e9:.2f} GFLOP)", floor,
                 f"odt / floor {t['odt'] / floor:.2f} (target <= 1.2); {flops / floor / 1e9:.0f} GFLOP/s"))
    for a in ("vidt", "odt-td3"):
        rows.append((f"{a} actor update (2 critic + 1 actor)", t[a], f"{t[a] / t['odt']:.2f}x ODT (target <= 1.5)"))
    for name, sec, note in rows:
        print(f"{name:<46}{sec * 1e3:>9.1f} ms  {note}")
    if args.breakdown:
        print("\nan ODT update by kind of op (profiler self time, scaled to the median):")
        for kind, ms in breakdown(fns["odt"], t["odt"]):
            print(f"  {kind:<58}{ms:>7.1f} ms {100 * ms / (t['odt'] * 1e3):>4.0f}%")
        vidt, b = learners["vidt"], td3_batch

        def target_forward():
            with torch.no_grad():
                vidt.critics.actor_target(b.next_rtg, b.next_states, b.next_actions, b.timesteps)
        parts = alternate({"critic step": lambda: vidt._critic_step(b), "of which the target actor's forward":
                           target_forward, "actor step": lambda: vidt._actor_step(b)}, args.reps)
        print("a vidt actor update's parts (two critic steps and one actor step):")
        for name, sec in parts.items():
            print(f"  {name:<58}{sec * 1e3:>7.1f} ms")


if __name__ == "__main__":
    main()
