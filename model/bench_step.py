"""What the method benchmarks share: one training step, a synchronised timer and the timed variant."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

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


def training_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: ViewBatch, amp: Callable[[], AbstractContextManager], step: int
) -> dict[str, Tensor]:
    """One full training step as the loop does it: EMA update, forward, backward, optimizer step."""
    model.update_teacher(model.teacher_momentum(step, 1000))
    with amp():
        out = model(batch)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    optimizer.step()
    return out


def variant_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """``--variants`` as a list (``batched``/``looped``), after the benchmark's common argument
    checks; ``parser.error`` (one line, exit 2) on a bad value. Sets ``--threads``."""
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in ("batched", "looped") for v in variants):
        parser.error(f"--variants takes batched and/or looped, got {args.variants!r}")
    if min(args.batch_size, args.steps, args.rounds) < 1 or args.warmup < 0:
        parser.error("--batch-size, --steps and --rounds must be >= 1, --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    return variants


def best_times(runs: list, warmup: int, rounds: int, steps: int, objective_steps: int) -> dict[str, tuple[float, float]]:
    """``{name: (seconds per step, seconds per objective step)}``, best of ``rounds``.

    Every variant is warmed first (compilation, cudnn autotuning, clocks), then the variants are
    timed in alternating rounds and each keeps its best, so that their order does not matter.
    ``runs`` have ``name``, ``step()``, ``objective_step()`` and ``timed(fn, reps)``.
    """
    for r in runs:
        for _ in range(warmup):
            r.step()
            r.objective_step()
    best = {r.name: [float("inf"), float("inf")] for r in runs}
    for _ in range(rounds):
        for r in runs:
            best[r.name][0] = min(best[r.name][0], r.timed(r.step, steps))
            best[r.name][1] = min(best[r.name][1], r.timed(r.objective_step, objective_steps))
    return {k: (v[0], v[1]) for k, v in best.items()}


class Variant:
    """One model + optimizer, stepped on one fixed batch as :func:`best_times` times it; ``name`` is
    batched or looped.

    ``objective(model, embeddings, batch)`` is the method's objective alone (a scalar to backward)
    on embeddings computed once without gradients, of which each student group's ``student_field``
    tensor is made a leaf that takes the gradient: where batching the pairs matters.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        batch: ViewBatch,
        args: argparse.Namespace,
        objective: Callable[[nn.Module, Any, ViewBatch], Tensor],
        student_field: str,
    ) -> None:
        self.name, self.model, self.opt, self.batch, self.device = name, model, optimizer, batch, args.device
        self.amp = lambda: torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)
        self.objective, self.student_field = objective, student_field
        self.step_i, self.out, self.emb = 0, {}, None

    def step(self) -> None:
        """One full training step: EMA update, forward, backward, optimizer step."""
        self.out = training_step(self.model, self.opt, self.batch, self.amp, self.step_i)
        self.step_i += 1

    def objective_step(self) -> None:
        """The objective alone (forward + backward) on the fixed embeddings."""
        if self.emb is None:
            with torch.no_grad(), self.amp():
                self.emb = self.model.embed(self.batch)
            for g in self.emb.student:
                setattr(g, self.student_field, getattr(g, self.student_field).detach().requires_grad_(True))
        self.objective(self.model, self.emb, self.batch).backward()

    def timed(self, fn: Callable[[], object], reps: int) -> float:
        """Mean wall-clock seconds of one ``fn()`` call over ``reps`` calls (device synchronised)."""
        return timed(fn, reps, self.device)
