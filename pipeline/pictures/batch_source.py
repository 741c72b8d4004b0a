"""One batch for the pictures: the cpu backend, photometric augmentation off, uint8 views."""

from __future__ import annotations

from pipeline.batch import ViewBatch
from pipeline.config import LoaderConfig
from pipeline.loader import build_loader

# feature stride of each method's backbone: ResNet C5 (CLoVE) and ViT-S/16 patches (GTSA)
METHOD_STRIDE = {"clove": 32, "gtsa": 16}


def picture_batch(
    shards: str,
    recipe: str,
    batch_size: int = 2,
    seed: int = 0,
    global_size: int = 224,
    local_size: int = 96,
    num_local: int | None = None,
) -> ViewBatch:
    """The first batch of ``recipe`` views of ``shards``, as the training loader makes them but
    without colour changes (so the pictures show geometry) and not normalised.

    Returns:
        a :class:`~pipeline.batch.ViewBatch` whose ``views`` are uint8 ``[B, 3, S, S]``.

    Raises:
        ValueError: the shards hold fewer than ``batch_size`` images.
    """
    cfg = LoaderConfig(
        shards=shards,
        backend="cpu",
        recipe=recipe,
        global_size=global_size,
        local_size=local_size,
        num_local=num_local,
        batch_size=batch_size,
        num_workers=0,
        samples_per_epoch=None,
        shuffle_buffer=100,
        seed=seed,
        photometric=False,
        normalize=False,
        pin_memory=False,
    )
    for batch in build_loader(cfg, device="cpu"):
        return batch
    raise ValueError(f"no batch of {batch_size} images in {shards!r}: use fewer --images or more shards")
