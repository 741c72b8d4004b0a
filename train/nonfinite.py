"""Non-finite loss, gradients and weights: the policy of the training loop.

Policy (``train.max_nonfinite_steps = N``, default 10):

- Before each optimizer step the loop combines, on the device, ``isfinite`` of the step's loss
  and of the gradients' norm into one boolean. When it is false the step is **skipped**: the
  gradients are dropped, weights and optimizer state stay as they were, and the step is counted
  (``nonfinite_steps`` in ``log.jsonl`` and in the end-of-run report). The step counter, the
  schedules and the data still advance, as after any step.
- After ``N`` skipped steps **in a row** the run stops with one line naming the step and the
  newest checkpoint (which holds finite weights: see below).
- ``N = 0`` turns the per-step check off (see the cost below); the checks at checkpoints stay.
- **Non-finite weights are never saved**: before every checkpoint the model's and optimizer's
  tensors are checked; a non-finite one stops the run with one line naming it, and the existing
  checkpoints are kept (``checkpoint.keep_last`` deletes old checkpoints only after a new finite
  one is on disk). ``--resume auto`` skips a checkpoint with non-finite weights (from an older
  version) and says so.

Cost: deciding whether to skip needs the flag on the host, i.e. **one device sync per optimizer
step** (what ``torch.amp.GradScaler`` already does with fp16). The flag is computed on the device
in one reduction over the gradients (or reuses the clipping norm) and read as one boolean; the
host waits for the backward to finish before queueing the next step. With fp16 mixed precision
the grad scaler already skips steps with non-finite gradients, so only the loss is checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor


class NonFiniteError(ValueError):
    """The run stopped on non-finite values (reported as one line)."""


def finite_flag(loss: Tensor | None, grads: list[Tensor], grad_norm: Tensor | None = None) -> Tensor:
    """A 0-dim bool tensor on the device: the loss and every gradient are finite (no host sync).

    ``grad_norm``: the total norm when clipping already computed it (it is non-finite exactly when
    some gradient element is)."""
    if grad_norm is None and grads:
        grad_norm = torch.stack(torch._foreach_norm(grads)).float().sum()
    parts = [t.detach().float().reshape(()) for t in (loss, grad_norm) if t is not None]
    if not parts:
        return torch.tensor(True)
    return torch.isfinite(torch.stack(parts)).all()


def first_nonfinite(tensors: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> str | None:
    """Name of the first floating tensor holding a NaN or an infinity, or None (one host read)."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    named = [(k, v) for k, v in items if isinstance(v, Tensor) and v.is_floating_point() and v.numel()]
    if not named:
        return None
    flags = torch.stack([torch.isfinite(v.detach()).all().cpu() for _, v in named])
    if bool(flags.all()):
        return None
    return named[int((~flags).nonzero()[0])][0]


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(f"{prefix}{k}.", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _flatten(f"{prefix}{i}.", v)
    else:
        yield prefix.rstrip("."), value


def nonfinite_in_state(state: Mapping[str, Any]) -> str | None:
    """The first non-finite tensor of a checkpoint state's ``model`` and ``optimizer`` entries
    (e.g. ``"model.student.backbone.conv1.weight"``), or None."""
    parts = [(k, state[k]) for k in ("model", "optimizer") if k in state]
    return first_nonfinite(list(_flatten("", dict(parts))))


class NonFiniteGuard:
    """Counts skipped steps and stops the run after ``max_in_a_row`` of them in a row (0: off)."""

    def __init__(self, max_in_a_row: int) -> None:
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.total = 0

    @property
    def enabled(self) -> bool:
        """Whether the loop checks every step (and pays one host read per step for it)."""
        return self.max_in_a_row > 0

    def step_ok(self, flag: Tensor, step: int, newest: str | None) -> bool:
        """Read ``flag`` (one host sync); False means: skip this step. Raises
        :class:`NonFiniteError` at the ``max_in_a_row``-th skipped step in a row."""
        if bool(flag):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        self.total += 1
        if self.in_a_row >= self.max_in_a_row:
            raise NonFiniteError(
                f"step {step}: loss or gradients non-finite in {self.in_a_row} optimizer steps in a row, each skipped "
                f"(train.max_nonfinite_steps={self.max_in_a_row}); newest checkpoint (finite): {newest or 'none'}; "
                "lower optim.base_lr or set optim.clip_grad_norm, then resume with --resume auto"
            )
        return False
