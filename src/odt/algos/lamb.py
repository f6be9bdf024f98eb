"""LAMB as the official ODT code runs it (timm's NVLAMB variant), written with foreach ops.

Per tensor: the bias-corrected Adam step u = m_hat / (sqrt(v_hat) + eps), plus weight_decay * theta
(L2 folded into the step, before the trust ratio); theta -= lr * r * u with the trust ratio
r = ||theta|| / ||u|| (1 where either norm is 0). With weight_decay 0 the trust ratio is not
applied and the update is Adam's, as in the official code.

Why not pytorch_optimizer.Lamb (odt's optimizer before): it does not bias-correct the second
moment, divides the first by (1 - beta1^t) (the first step is 10x the official one), and clamps
||theta|| at 10 in the trust ratio, so every tensor of norm above 10 (LayerNorm gains, wide
weights) moves 10 / ||theta|| times as far as in the paper's runs, for the whole run. No setting
of it reproduces the official update (docs/parity.md). The state keeps its key names (exp_avg,
exp_avg_sq per tensor, step per group), so checkpoints written with it still load.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class Lamb(Optimizer):
    """The step count and the learning rate of each group live on the parameters' device as 0-d
    tensors (Adam's ``capturable``): a skipped step, the warmup and every schedule change them there,
    so one captured step (CUDA graphs, ``torch.compile``) serves the whole run. Checkpoints written
    with a Python int step and float rate load and convert."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._as_device_tensors()
        self.register_load_state_dict_post_hook(lambda opt: opt._as_device_tensors())

    def _as_device_tensors(self) -> None:
        for group in self.param_groups:
            # Moments made now, not at the first step (nor missing from a state saved before one):
            # a captured step then finds the state it keeps.
            for p in group["params"]:
                if "exp_avg" not in self.state[p]:
                    self.state[p].update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            device = group["params"][0].device
            # float64 where the device has it: 1 - 0.999^t in float32 is off by 1e-4 at t = 1.
            dtype = torch.float32 if device.type == "mps" else torch.float64
            for key, default in (("step", 0.0), ("lr", None)):
                value = group.get(key, default)
                if not (torch.is_tensor(value) and value.device == device and value.dtype == dtype):
                    group[key] = torch.as_tensor(float(value), dtype=dtype).to(device)
        # Made once, not at a step: a compiled step then finds a tensor, not a cache to look in.
        self._segment_index = [_segments(group["params"]) for group in self.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        """One LAMB step. Where ``self.found_inf`` is a tensor (torch's convention for optimizers that
        skip on the device, as GradScaler sets it), a value of 1 leaves the weights, moments and step
        count as they were, without reading the flag on the host.

        Every operation spans all of a group's tensors at once: foreach calls given one scalar or one
        0-d tensor, and, where each tensor needs its own value (a skipped step's NaN set to 0, the
        trust ratio), one flat copy viewed per tensor. A call per tensor would launch a kernel per
        tensor, three times over."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        keep = None if found_inf is None else 1.0 - found_inf.float()
        for group, segments in zip(self.param_groups, self._segment_index):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # The count this step would make: a skipped one computes with it (finite) and keeps the old.
            t = group["step"] + 1
            group["step"].add_(1 if keep is None else keep.to(t.dtype))
            m, v = self._moments(group, params, keep)
            update = _adam_direction(m, v, t, group)
            if len(params) < len(group["params"]):  # some tensors had no gradient this step
                segments = _segments(params)
            update = _scale(update, params, group, keep, segments)
            torch._foreach_sub_(params, update)
        return loss

    def _moments(self, group: dict, params: list, keep: torch.Tensor | None) -> tuple[list, list]:
        """The moments m and v of ``params``, updated in place with their gradients (times ``keep``)."""
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        if keep is None:
            grads = [p.grad for p in params]
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
            return m, v
        # The same with every rate times keep; a skipped step's gradient may be NaN.
        flat, grads = _flat([p.grad for p in params])
        torch.nan_to_num_(flat, 0.0, 0.0, 0.0)
        flat.mul_(keep)
        # lerp takes no device scalar: the step's moment, then kept (x 1 + y x 0 is exact).
        fresh = torch._foreach_lerp(m, grads, 1 - beta1)
        torch._foreach_mul_(fresh, keep)
        torch._foreach_mul_(m, 1 - keep)
        torch._foreach_add_(m, fresh)
        torch._foreach_mul_(v, 1 - (1 - beta2) * keep)
        g2 = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g2, (1 - beta2) * keep)
        torch._foreach_add_(v, g2)
        return m, v


def _adam_direction(m: list, v: list, t: torch.Tensor, group: dict) -> list:
    """The bias-corrected Adam step m_hat / (sqrt(v_hat) + eps), one tensor per parameter."""
    beta1, beta2 = group["betas"]
    dtype = m[0].dtype
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, torch.sqrt(1 - beta2 ** t).to(dtype))
    torch._foreach_add_(denom, group["eps"])
    update = torch._foreach_div(m, denom)
    torch._foreach_div_(update, (1 - beta1 ** t).to(dtype))
    return update


def _scale(update: list, params: list, group: dict, keep: torch.Tensor | None, segments: torch.Tensor) -> list:
    """The step: with weight decay, L2 folded in and each tensor's trust ratio (in a few ops
    on stacked norms, applied to the flat update), times the rate; a skipped step's, times 0."""
    step_size = group["lr"].to(update[0].dtype)
    wd = group["weight_decay"]
    if wd == 0:
        torch._foreach_mul_(update, step_size if keep is None else step_size * keep)
        return update
    torch._foreach_add_(update, params, alpha=wd)
    w, u = torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(update))
    ratio = torch.where((w > 0) & (u > 0), w / u, 1.0) * step_size
    flat, views = _flat(update)
    flat.mul_((ratio if keep is None else ratio * keep)[segments])
    return views


def _segments(tensors: list[torch.Tensor]) -> torch.Tensor:
    """For each element of the tensors laid end to end, the index of its tensor."""
    sizes = [t.numel() for t in tensors]
    device = tensors[0].device
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device),
                                   output_size=sum(sizes))


def _flat(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The tensors copied end to end into one, and views of that copy shaped as each of them."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    parts = flat.split([t.numel() for t in tensors])
    return flat, [part.view_as(t) for part, t in zip(parts, tensors)]
