"""One batch for the pictures: the cpu backend, photometric augmentation off, uint8 views."""

from __future__ import annotations

from typing import Any

from pipeline.batch import ViewBatch
from pipeline.config import plain_config
from pipeline.loader import build_loader


def picture_batch(shards: str, recipe: str, batch_size: int = 2, seed: int = 0, **view_fields: Any) -> ViewBatch:
    """The first batch of ``recipe`` views of ``shards``, as the training loader makes them but
    without colour changes (so the pictures show geometry) and not normalised.

    Args:
        view_fields: loader fields of the views (``global_size``, ``local_size``, ``num_local``).

    Returns:
        a :class:`~pipeline.batch.ViewBatch` whose ``views`` are uint8 ``[B, 3, S, S]``.

    Raises:
        ValueError: the shards hold fewer than ``batch_size`` images.
    """
    cfg = plain_config(shards, recipe=recipe, batch_size=batch_size, seed=seed, shuffle_buffer=100, **view_fields)
    for batch in build_loader(cfg, device="cpu"):
        return batch
    raise ValueError(f"no batch of {batch_size} images in {shards!r}: use fewer --images or more shards")
