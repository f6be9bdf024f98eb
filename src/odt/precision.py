"""The precision a run computes in: bf16 autocast where the device's bfloat16 hardware makes it
faster than fp32 (GPUs of compute capability 8+, CPUs with AMX), fp32 everywhere else.

Why a capability query and not a timing: the answer must not change between two runs on the same
machine (a busy core would flip a timing, and with it every metric of a seeded run). Why these
capabilities: elsewhere bf16 autocast is slower than fp32, emulated on AVX2 (a matrix multiply
9.3x slower) and, on AVX512_BF16 without AMX, costing more in conversions than its dot products
save (an update 1.5x slower); benchmarks/RESULTS.md, "Precision". ``--precision bf16`` stays
available where a user measures otherwise.
"""
from __future__ import annotations

import os
import statistics
import time

import torch

# oneDNN's names for the instruction sets with AMX (ONEDNN_MAX_CPU_ISA may cap the library below
# what the CPU has, and then bf16 runs on slower instructions whatever the CPU says).
_ONEDNN_AMX_ISAS = ("AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX10_2_512_AMX", "ALL", "DEFAULT")


def cpu_bf16() -> tuple[bool, str]:
    """Whether torch on this CPU runs a bf16 update faster than fp32, and why: with AMX's tile
    units, yes; with AVX512_BF16 alone, no (its dot-product instruction does not pay for the
    conversions autocast adds: an update measured 1.5x slower than fp32, benchmarks/RESULTS.md);
    with neither, bf16 is emulated (AVX2: 9.3x slower for one matrix multiply, 12.7x for an update)."""
    amx, avx512_bf16 = torch.cpu._is_amx_tile_supported(), torch.cpu._is_avx512_bf16_supported()
    if not amx:
        has = "AVX512_BF16 but no AMX" if avx512_bf16 else \
            f"no AMX and no AVX512_BF16 ({torch.backends.cpu.get_cpu_capability()})"
        return False, f"this CPU has {has}: bf16 is slower than fp32 there"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if cap and not cap.startswith(_ONEDNN_AMX_ISAS):
        return False, f"this CPU has AMX, but ONEDNN_MAX_CPU_ISA={cap} keeps oneDNN off it"
    return True, "this CPU has AMX"


def cuda_bf16(device: torch.device) -> tuple[bool, str]:
    name = torch.cuda.get_device_name(device)
    major, minor = torch.cuda.get_device_capability(device)
    native = major >= 8  # Ampere and later have bf16 tensor cores; earlier GPUs emulate it
    return native, f"{name} (compute capability {major}.{minor}) {'has' if native else 'lacks'} bf16 tensor cores"


def bf16_native(device: str | torch.device) -> tuple[bool, str]:
    device = torch.device(device)
    return cuda_bf16(device) if device.type == "cuda" else cpu_bf16()


def resolve_precision(requested: str, device: str | torch.device) -> tuple[str, str, str | None]:
    """(precision, why, warning): ``auto`` becomes bf16 where ``device``'s bf16 hardware makes it
    faster and fp32 elsewhere; an explicit choice stands, with a warning when bf16 is asked of
    hardware where it is slower (the slowdown measured on the spot)."""
    native, why = bf16_native(device)
    if requested == "auto":
        return ("bf16" if native else "fp32"), f"auto: {why}", None
    if requested == "bf16" and not native:
        slow = bf16_slowdown(device)
        return "bf16", f"asked for: {why}", (
            f"--precision bf16 is slow here ({why}): a bf16 matrix multiply measured {slow:.1f}x the "
            f"time of fp32 on this machine just now; --precision auto (or fp32) picks fp32")
    return requested, f"asked for ({why})", None


def apply_precision(precision: str, device: str | torch.device) -> None:
    """fp32 on a CUDA GPU multiplies matrices in TF32 where it has tensor cores for it (compute
    capability 8+): 10 mantissa bits inside the products, fp32 sums, several times the speed."""
    if torch.device(device).type == "cuda" and precision == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def bf16_slowdown(device: str | torch.device, reps: int = 7) -> float:
    """Time of one bf16-autocast ``linear`` of a training MLP's shape over its fp32 time, median
    of ``reps`` (about 0.1 s on a CPU that emulates bf16)."""
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(3840, 128, generator=g, device=device)
    w = torch.randn(512, 128, generator=g, device=device)

    def timed(autocast: bool) -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            torch.nn.functional.linear(x, w)  # warm-up: oneDNN builds its kernel on first use
            times = []
            for _ in range(reps):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t = time.perf_counter()
                torch.nn.functional.linear(x, w)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t)
        return statistics.median(times)

    return timed(True) / timed(False)
