"""Resume: put model, optimizer, scaler, RNG and the data position back as a checkpoint left them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from train.config import Config, config_to_dict, flat_items
from train.plan import Plan

if TYPE_CHECKING:
    from pipeline.loader import ViewLoader


@dataclass
class Position:
    """Where the loop is: optimizer step, epoch, micro-batches consumed in the epoch.

    ``mid_epoch``: the next epoch's iteration continues the loader's saved position instead of
    starting the epoch; ``pending_rng``: RNG states to restore right before that iteration starts.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    mid_epoch: bool = False
    pending_rng: dict[str, Any] | None = None


def restore(
    state: dict[str, Any],
    core: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    loader: ViewLoader,
    plan: Plan,
    cfg: Config,
    rank: int,
    world: int,
) -> tuple[Position, dict[str, tuple[Any, Any]]]:
    """Put a loaded checkpoint ``state`` into the run; returns the position and the config keys that
    changed (``{key: (saved, now)}``)."""
    core.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    pos = Position(int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"]))
    ranks = state["ranks"]
    if len(ranks) != world:
        warnings.warn(
            f"checkpoint from {len(ranks)} processes resumed on {world}: data order and RNG "
            "streams continue approximately, not exactly",
            stacklevel=2,
        )
    mine = ranks[rank % len(ranks)]
    pos.pending_rng = mine["rng"]
    # Always restore the data position: a reader with its own state (DALI) continues its stream
    # from there; at an epoch's end set_epoch() then moves every backend to the next one.
    loader.load_state_dict(mine["loader"])
    if pos.batch_in_epoch >= plan.micro_batches_per_epoch:
        pos.epoch, pos.batch_in_epoch = pos.epoch + 1, 0  # saved at an epoch's end: start the next afresh
    else:
        pos.mid_epoch = True
    now = flat_items(config_to_dict(cfg))
    changed = {k: (v, now.get(k)) for k, v in flat_items(state["config"]).items() if now.get(k) != v}
    return pos, changed
