"""Loader configuration: one dataclass, the same for every backend, with the rules of its values.

Every field declares what it accepts (:func:`pipeline.config_fields.setting`);
:func:`check_loader_config` checks them and the rules between fields, so a bad value stops at
load time with a one-line error naming the key, not a minute later in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.backends import BACKENDS
from pipeline.config_fields import check_fields, setting

INTERPOLATIONS = ("bilinear", "bicubic")
RECIPE_VALUE = "the recipe's value"
MAX_VIEW_SIZE = 2048  # pixels per side of a view

# A probability is one number for every view, or [first global view, other global views, locals]
# (docs/methods.md writes CLoVE's blur as p = 1.0 / 0.1 / 0.5 in that order).
Probability = float | tuple[float, float, float]


@dataclass
class AugmentConfig:
    """Overrides of the recipe's augmentation (``pipeline.views.RECIPES`` holds the values
    of docs/methods.md); null keeps the recipe's value. ``data.photometric=false`` still turns every
    photometric op off."""

    # crop area as a share of the image's, [low, high], for global and local views
    global_scale: tuple[float, float] | None = setting(None, above=0, max=1, ordered=True, null=RECIPE_VALUE)
    local_scale: tuple[float, float] | None = setting(None, above=0, max=1, ordered=True, null=RECIPE_VALUE)
    ratio: tuple[float, float] | None = setting(None, above=0, ordered=True, null=RECIPE_VALUE)  # crop aspect w/h
    interpolation: str | None = setting(None, choices=INTERPOLATIONS, null=RECIPE_VALUE)
    flip_p: Probability | None = setting(None, min=0, max=1, null=RECIPE_VALUE)  # horizontal flip
    rotate: bool | None = setting(None, null=RECIPE_VALUE)  # uniform quarter turns (GTSA)
    # colour jitter strengths: brightness, contrast, saturation, hue (hue at most 0.5)
    jitter: tuple[float, float, float, float] | None = setting(None, min=0, null=RECIPE_VALUE)
    jitter_p: Probability | None = setting(None, min=0, max=1, null=RECIPE_VALUE)
    gray_p: Probability | None = setting(None, min=0, max=1, null=RECIPE_VALUE)
    blur_p: Probability | None = setting(None, min=0, max=1, null=RECIPE_VALUE)
    blur_sigma: tuple[float, float] | None = setting(None, above=0, ordered=True, null=RECIPE_VALUE)
    solarize_p: Probability | None = setting(None, min=0, max=1, null=RECIPE_VALUE)
    # (global, local): share of the image a view must share with every global view drawn before it
    # (GTSA: 0.02, 0.01; 0: no rule)
    min_overlap: tuple[float, float] | None = setting(None, min=0, below=1, null=RECIPE_VALUE)


@dataclass
class LoaderConfig:
    """What the loader needs; ``train/`` embeds it in its schema as ``data``.

    Epochs: with ``samples_per_epoch`` set, shards are resampled with replacement and every rank
    yields exactly ``samples_per_epoch // (batch_size)`` batches per epoch (no rank waits on another);
    with ``samples_per_epoch=None`` each epoch is one pass over this rank's shards, every sample
    once (for evaluation and tests).
    """

    shards: str = setting("data/shards/photos", free=True)  # directory, glob, brace pattern or any URL WebDataset opens
    backend: str = setting("cpu", choices=tuple(BACKENDS))
    recipe: str = setting("clove", free=True)  # a name in pipeline.views.RECIPES (checked below)
    # views larger than this are a typo (a 100000-px view would exhaust memory in every worker)
    global_size: int = setting(224, min=1, max=MAX_VIEW_SIZE)
    local_size: int = setting(96, min=1, max=MAX_VIEW_SIZE)
    num_local: int | None = setting(None, min=0, null="the recipe's count")
    batch_size: int = setting(64, min=1)  # per rank
    num_workers: int = setting(2, min=0)  # 0: load in the main process
    samples_per_epoch: int | None = setting(None, min=1, null="one exact pass over the shards, no resampling")  # per rank
    shuffle_buffer: int = setting(1000, min=0)  # samples; 0 or 1: stored order
    # training stops when the share of unreadable or empty shards, or of failed sample reads, is above this
    max_bad_fraction: float = setting(0.01, min=0, max=1)
    seed: int = setting(0, free=True)
    photometric: bool = True
    decode: str = setting("auto", choices=("auto", "gpu", "cpu"))  # torch backend: gpu (nvJPEG) | cpu (workers decode)
    # dali backend: view parameters from pipeline.views (shared), or DALI's own operators (no overlap rule)
    dali_sampler: str = setting("shared", choices=("shared", "dali"))
    reduced_decode: bool = True  # cpu: libjpeg DCT scaling when the views allow it
    pin_memory: bool = True
    prefetch_factor: int = setting(2, min=1)  # batches queued per worker
    normalize: bool = True  # on the training device, uint8 -> float (ImageNet mean/std)
    channels_last: bool = False
    augment: AugmentConfig = setting(default_factory=AugmentConfig, free=True)


# A loader that shows views as they are: one pass over every sample, in this process, no colour
# changes, no normalisation, no pinned memory (pictures and tests look at these batches).
PLAIN_LOADER = dict(num_workers=0, samples_per_epoch=None, photometric=False, normalize=False, pin_memory=False)


def plain_config(shards: str, **fields: Any) -> LoaderConfig:
    """A :data:`PLAIN_LOADER` config of ``shards``; ``fields`` set or override any other field."""
    return LoaderConfig(**{**PLAIN_LOADER, "shards": shards, **fields})


def check_loader_config(cfg: LoaderConfig, prefix: str = "") -> None:
    """One-line ``ValueError`` for the first value of ``cfg`` outside its rule (keys named with
    ``prefix``, e.g. ``"data."``), then for combinations no backend can run."""
    from pipeline.views import RECIPES, check_recipe_name  # lazy: the recipes are built from this module's types

    check_fields(cfg, prefix)
    try:
        check_recipe_name(cfg.recipe)
    except ValueError as e:
        raise ValueError(f"{prefix}recipe: {e}") from None
    if cfg.samples_per_epoch is not None and cfg.samples_per_epoch < cfg.batch_size:
        raise ValueError(
            f"{prefix}samples_per_epoch ({cfg.samples_per_epoch}) must be at least {prefix}batch_size "
            f"({cfg.batch_size}): an epoch would have no batch"
        )
    if RECIPES[cfg.recipe].num_local == 0 and cfg.num_local:
        raise ValueError(
            f"{prefix}num_local must be null or 0 with {prefix}recipe={cfg.recipe} (it has no local views), got {cfg.num_local}"
        )
    hue = cfg.augment.jitter[3] if cfg.augment.jitter is not None else 0.0
    if hue > 0.5:
        raise ValueError(f"{prefix}augment.jitter: the hue strength (4th value) must be in [0, 0.5], got {hue}")
