"""Loader configuration: one dataclass, the same for every backend."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LoaderConfig:
    """What the loader needs; ``train/`` embeds it in its schema as ``data``.

    Epochs: with ``samples_per_epoch`` set, shards are resampled with replacement and every rank
    yields exactly ``samples_per_epoch // (batch_size)`` batches per epoch (no rank waits on another);
    with ``samples_per_epoch=None`` each epoch is one pass over this rank's shards, every sample
    once (for evaluation and tests).
    """

    shards: str = "data/shards/photos"  # directory, glob, brace pattern or any URL WebDataset opens
    backend: str = "cpu"  # cpu | torch | dali
    recipe: str = "clove"  # clove | gtsa | two-view
    global_size: int = 224
    local_size: int = 96
    num_local: int | None = None  # None: the recipe's own count
    batch_size: int = 64  # per rank
    num_workers: int = 2
    samples_per_epoch: int | None = None  # per rank; None: one exact pass, no resampling
    shuffle_buffer: int = 1000
    seed: int = 0
    photometric: bool = True
    decode: str = "auto"  # torch backend: gpu (nvJPEG) | cpu (workers decode) | auto
    reduced_decode: bool = True  # cpu: libjpeg DCT scaling when the views allow it
    pin_memory: bool = True
    prefetch_factor: int = 2
    normalize: bool = True  # on the training device, uint8 -> float (ImageNet mean/std)
    channels_last: bool = False
