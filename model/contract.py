"""The method contract: everything ``train/`` may call on a method, and nothing more.

A method is one module (``model/<name>.py``) and one line in :data:`model.registry.METHODS`. The
training loop builds it with ``METHODS[name](options)`` and then relies only on this protocol:

- ``forward(batch) -> dict``: ``"loss"`` (fp32 scalar with grad) plus detached scalar terms for
  the log; optionally ``"embeddings"`` (detached ``[N, D]``) that the loop's collapse monitor reads
  on logging steps only.
- ``teacher_momentum(step, total_steps)``: the EMA schedule (a method without a teacher returns 1).
- ``update_teacher(momentum)``: the EMA step, called once per optimizer step, *before* the forward
  of that step's first micro-batch.
- ``set_epoch(epoch)``: epoch-dependent behaviour (e.g. GTSA's patch-correspondence warm-up).
- ``parameter_groups()``: the trainable parameters split by :func:`split_decay` (no weight decay,
  no LARS adaptation for norms, biases, position embeddings and tokens).
- ``export(out_dir)``: writes the student backbone in the formats of the backbone's family and a
  ``backbone.json`` that :func:`model.features.load_exported` reads back; returns the paths.

Optional: ``compile_step()``, called once before training when ``train.compile`` is set
(``torch.compile`` of the networks and the objective, in place, parameter names unchanged).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from pipeline.batch import ViewBatch

# Parameter-name fragments that never get weight decay or LARS adaptation (DINO, timm, MoCo v3).
NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "mask_token", "dist_token")


@runtime_checkable
class Method(Protocol):
    """What a registered method provides (an ``nn.Module`` that also satisfies this)."""

    def forward(self, batch: ViewBatch) -> dict[str, Tensor]:
        """``{"loss": fp32 scalar with grad, ...detached log terms}``, optionally ``"embeddings"`` ``[N, D]``."""

    def teacher_momentum(self, step: int, total_steps: int) -> float:
        """EMA momentum for optimizer step ``step`` of ``total_steps`` (1 without a teacher)."""

    def update_teacher(self, momentum: float) -> None:
        """One EMA step of the teacher towards the student."""

    def set_epoch(self, epoch: int) -> None:
        """Switches epoch-dependent behaviour (e.g. a loss warm-up)."""

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters split by :func:`split_decay`."""

    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """Writes the student backbone and ``backbone.json`` into ``out_dir``; returns the paths."""


# the protocol's members, read from the class so that the check follows the contract
METHOD_MEMBERS = tuple(name for name, member in vars(Method).items() if callable(member) and not name.startswith("_"))


def no_decay(name: str, param: Tensor) -> bool:
    """True for parameters that get neither weight decay nor LARS: 1-D tensors (biases, norm
    scales and shifts) and position embeddings / learned tokens, whatever their shape."""
    return param.ndim <= 1 or any(part in name for part in NO_DECAY_NAMES)


def split_decay(module: nn.Module) -> list[dict[str, Any]]:
    """Trainable parameters of ``module`` as ``[{"params", "decay": True}, {"params", "decay": False}]``
    (empty groups dropped). The optimizer builder turns ``decay`` into weight decay and LARS flags."""
    decay, plain = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "decay": True, "name": "decay"}, {"params": plain, "decay": False, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def check_method(method: Any) -> None:
    """ValueError naming the missing members when ``method`` does not satisfy :class:`Method`."""
    missing = [m for m in METHOD_MEMBERS if not callable(getattr(method, m, None))]
    if missing:
        raise ValueError(f"{type(method).__name__} does not satisfy model.contract.Method: missing {missing}")
