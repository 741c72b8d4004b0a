"""What the method benchmarks share: one training step and a synchronised timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from pipeline.batch import ViewBatch


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], reps: int, device: str) -> float:
    """Mean wall-clock seconds of one ``fn()`` call over ``reps`` calls (device synchronised)."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: ViewBatch,
                  amp: Callable[[], AbstractContextManager], step: int) -> dict[str, Tensor]:
    """One full training step as the loop does it: EMA update, forward, backward, optimizer step."""
    model.update_teacher(model.teacher_momentum(step, 1000))
    with amp():
        out = model(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return out
