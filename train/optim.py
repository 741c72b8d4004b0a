"""Optimizers (LARS, AdamW), parameter groups and gradient clipping.

Parameter groups come from the method (``parameter_groups()`` of the method contract): groups
with ``decay=True`` (conv and linear weights) get weight decay and, under LARS, the trust-ratio
adaptation; the others (biases, norm scales and shifts, position embeddings, tokens) get neither,
as in BYOL/SimCLR/MoCo v3/DINO. Each optimizer group carries ``apply_wd`` so the loop's
weight-decay schedule only touches the groups that decay.

All per-tensor work uses ``torch._foreach_*`` kernels, and nothing here reads a value back to the
host, so an optimizer step never forces a device sync.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from train.config import OptimConfig


def param_groups(method: nn.Module, weight_decay: float) -> list[dict]:
    """Optimizer groups from ``method.parameter_groups()`` (``{"params", "decay"}`` dicts)."""
    groups = []
    for g in method.parameter_groups():
        decay = bool(g["decay"])
        groups.append(
            {
                "params": list(g["params"]),
                "weight_decay": weight_decay if decay else 0.0,
                "apply_wd": decay,
                "lars": decay,
                "group": g.get("name", "decay" if decay else "no_decay"),
            }
        )
    return [g for g in groups if g["params"]]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio (You et al. 2017; the BYOL/MoCo v3 variant).

    Per tensor ``p`` of a group with ``lars=True``:
    ``g <- grad + wd * p``; ``g <- g * trust * ||p|| / ||g||`` (factor 1 when either norm is 0);
    ``buf <- momentum * buf + g``; ``p <- p - lr * buf``. Groups with ``lars=False`` skip the
    adaptation (and get ``weight_decay=0`` from :func:`param_groups`).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 1e-3,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError(f"LARS: invalid lr={lr}, momentum={momentum}, wd={weight_decay}, trust={trust_coefficient}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient, lars=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):  # noqa: D102 (torch's signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if group["lars"]:
                p_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                ok = (p_norm > 0) & (g_norm > 0)
                trust = torch.where(ok, group["trust_coefficient"] * p_norm / g_norm.clamp_min(1e-30), 1.0)
                grads = torch._foreach_mul(grads, list(trust.to(grads[0].dtype).unbind()))
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


def build_optimizer(cfg: OptimConfig, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The configured optimizer over :func:`param_groups` of the method ``model``."""
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if cfg.name == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, trust_coefficient=cfg.trust_coefficient)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":  # plain SGD with momentum (baselines, and tests that need a linear update)
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose lars, adamw or sgd")


def set_lr_wd(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Apply this step's scheduled values (python floats: no device work)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay if group.get("apply_wd", True) else 0.0


def params_with_grad(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The parameters the optimizer steps that have a gradient this step."""
    return [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]


@torch.no_grad()
def clip_per_parameter_(grads: list[Tensor], max_norm: float) -> None:
    """Scale each gradient tensor whose L2 norm exceeds ``max_norm`` down to it (GTSA/DINO style)."""
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads))
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(scale.to(grads[0].dtype).unbind()))
