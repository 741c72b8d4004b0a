"""One entry point, config in, iterator of :class:`~pipeline.batch.ViewBatch` out, any backend.

Backends are a plain registry of builder functions (:data:`pipeline.backends.BACKENDS`), imported
lazily so that a machine without DALI or a GPU can still use the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Protocol

import torch

from pipeline.backends import BACKENDS
from pipeline.batch import ViewBatch
from pipeline.config import LoaderConfig, check_loader_config


class ViewLoader(Protocol):
    """What every backend's builder returns."""

    def __iter__(self) -> Iterator[ViewBatch]: ...  # one epoch, batches on ``device``

    def __len__(self) -> int: ...  # batches per epoch on this rank (when known)

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` the one the next ``__iter__`` yields."""

    def state_dict(self) -> dict:
        """The data position: epoch and batches consumed."""

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; the next ``__iter__`` resumes there."""

    @property
    def stats(self) -> dict[str, int]:
        """Cumulative counters, e.g. ``bad_samples``, ``samples``."""


def build_loader(cfg: LoaderConfig, *, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> ViewLoader:
    """Build the configured backend's loader for this rank (one-line ValueError for a bad config value)."""
    check_loader_config(cfg)
    module_name, func_name = BACKENDS[cfg.backend].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func_name)(cfg, rank=rank, world_size=world_size, device=device)
