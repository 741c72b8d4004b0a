"""The run's plan: its length and the lr / weight-decay schedules, from the config and the loader."""

from __future__ import annotations

from dataclasses import dataclass

from model.schedule import cosine, scaled_lr, warmup_cosine
from train.config import Config


@dataclass
class Plan:
    """Run length and schedule constants; lr and wd are pure functions of the optimizer step."""

    batches_per_epoch: int  # per rank, as the loader promises
    steps_per_epoch: int  # optimizer steps
    total_steps: int  # the schedules' length
    max_steps: int  # where this run stops (``train.max_steps`` or ``total_steps``)
    warmup_steps: int
    peak_lr: float
    min_lr: float
    weight_decay: float
    weight_decay_end: float | None  # None: constant weight decay
    images_per_micro: int  # global images per micro-batch
    grad_accum: int

    @property
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches used per epoch (a remainder smaller than ``grad_accum`` is left unused)."""
        return self.steps_per_epoch * self.grad_accum

    def lr(self, step: int) -> float:
        """Learning rate at optimizer step ``step``: linear warm-up, then cosine to ``min_lr``."""
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.peak_lr, self.min_lr)

    def wd(self, step: int) -> float:
        """Weight decay at optimizer step ``step``: constant, or cosine to ``weight_decay_end``."""
        if self.weight_decay_end is None:
            return self.weight_decay
        return cosine(step, self.total_steps, self.weight_decay, self.weight_decay_end)


def make_plan(cfg: Config, loader_len: int, num_processes: int) -> Plan:
    """The plan for ``loader_len`` batches per rank and epoch on ``num_processes`` ranks."""
    accum = cfg.train.grad_accum
    steps_per_epoch = loader_len // accum
    if steps_per_epoch < 1:
        raise ValueError(
            f"an epoch has {loader_len} batches per rank, fewer than train.grad_accum={accum}: "
            f"raise data.samples_per_epoch or lower data.batch_size"
        )
    peak = scaled_lr(cfg.optim.base_lr, cfg.data.batch_size, num_processes, accum)
    floor = cfg.optim.min_lr if cfg.optim.min_lr is not None else cfg.optim.min_lr_ratio * peak
    total = cfg.train.epochs * steps_per_epoch
    max_steps = total if cfg.train.max_steps is None else min(cfg.train.max_steps, total)
    warmup = min(int(round(cfg.optim.warmup_epochs * steps_per_epoch)), total)
    return Plan(
        loader_len,
        steps_per_epoch,
        total,
        max_steps,
        warmup,
        peak,
        floor,
        cfg.optim.weight_decay,
        cfg.optim.weight_decay_end,
        cfg.data.batch_size * num_processes,
        accum,
    )
