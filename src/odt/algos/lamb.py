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
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """One LAMB step. Where ``self.found_inf`` is a tensor (torch's convention for optimizers that
        skip on the device, as GradScaler sets it), a value of 1 leaves the weights and moments as
        they were, without reading the flag on the host; the caller then takes back the step count."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        keep = None if found_inf is None else 1.0 - found_inf.float()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            group["step"] = int(group.get("step", 0)) + 1
            t = group["step"]
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for p, s in zip(params, states):
                if "exp_avg" not in s:
                    s["exp_avg"], s["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            m = [s["exp_avg"] for s in states]
            v = [s["exp_avg_sq"] for s in states]
            if keep is None:
                torch._foreach_lerp_(m, grads, 1 - beta1)
                torch._foreach_mul_(v, beta2)
                torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
            else:  # the same with every rate times keep; a skipped step's gradient may be NaN
                for g in grads:
                    torch.nan_to_num_(g, 0.0, 0.0, 0.0)
                torch._foreach_mul_(grads, keep)
                torch._foreach_lerp_(m, grads, [(1 - beta1) * keep] * len(m))
                torch._foreach_mul_(v, 1 - (1 - beta2) * keep)
                g2 = torch._foreach_mul(grads, grads)
                torch._foreach_mul_(g2, (1 - beta2) * keep)
                torch._foreach_add_(v, g2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, (1 - beta2 ** t) ** 0.5)
            torch._foreach_add_(denom, group["eps"])
            update = torch._foreach_div(m, denom)
            torch._foreach_div_(update, 1 - beta1 ** t)
            wd = group["weight_decay"]
            if wd != 0:
                torch._foreach_add_(update, params, alpha=wd)
                # Every tensor's trust ratio in a few ops on stacked norms (a per-tensor loop was
                # most of a small model's update).
                w, u = torch.stack(torch._foreach_norm(params)), torch.stack(torch._foreach_norm(update))
                ratio = torch.where((w > 0) & (u > 0), w / u, 1.0)
                torch._foreach_mul_(update, (ratio if keep is None else ratio * keep).unbind())
            elif keep is not None:
                torch._foreach_mul_(update, keep)
            torch._foreach_add_(params, update, alpha=-group["lr"])
        return loss

    def undo_step_count(self) -> None:
        """After a step that ``found_inf`` skipped: its count goes back, as if never taken."""
        for group in self.param_groups:
            if group.get("step"):
                group["step"] -= 1
