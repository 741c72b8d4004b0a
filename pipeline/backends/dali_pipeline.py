"""The DALI graph of the ``dali`` backend: shards in, views plus the geometry that made them out.

DALI's fused random-crop operators do not say which window they cut, so this graph draws the view
parameters first and makes them pipeline outputs, then cuts the pixels from exactly those
parameters:

    webdataset reader -> peek_image_shape -> view parameters (windows [V, 4] as (x0, y0, w, h),
    flips [V], quarter turns [V]) -> ROI decode of the union of all windows (once per image,
    ``mixed`` = hardware/nvJPEG decoder on a GPU, CPU decoder with ``device_id=None``) -> per view:
    resize of the window with antialiasing (a flip is the same resize with the ROI reversed) ->
    quarter turns (fn.rotate, nearest neighbour, exact on a square canvas) -> colour operators ->
    uint8 CHW (or HWC for channels-last).

View parameters come from one of two samplers:

* ``shared`` (default): :func:`pipeline.views.sample_views`, the sampler every backend uses, run by
  ``fn.python_function`` on the peeked shapes with a per-image seed drawn by DALI's RNG (so the
  draws are reproducible and covered by DALI checkpoints). Same law as the other backends,
  including GTSA's overlap rule; costs a few tens of microseconds of Python per image.
* ``dali``: ``fn.random_crop_generator`` per view (the recipe's scale/ratio), ``fn.random.coin_flip``
  for flips and a uniform draw over ``{0, 1, 2, 3}`` for quarter turns; no Python at all. DALI's
  fallback after 10 failed attempts differs slightly from torchvision's, and there is no overlap
  rule, so recipes that need one (GTSA) are refused.

The matrices are not built here: the host builds them from the parameter outputs
(:mod:`pipeline.backends.dali_backend`), through the same geometry builders as every backend.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali import math as dmath
from nvidia.dali.pipeline import Pipeline

from pipeline.views import Photometric, Recipe, ViewSpec, sample_views
from shards.extensions import DALI_IMAGE_EXTS, LABEL_EXTS

if TYPE_CHECKING:
    from nvidia.dali.data_node import DataNode

READER_NAME = "shards"
# DALI matches extension sets against the text after the first dot of a member's name.
IMAGE_EXT = ";".join(DALI_IMAGE_EXTS)
LABEL_EXT = ";".join(LABEL_EXTS)
INTERPOLATION = {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC}
# Output names, in the order the pipeline returns them after the V views.
PARAM_OUTPUTS = ("windows", "flips", "turns", "shape", "source_info")


@dataclass(frozen=True)
class GraphSpec:
    """Everything that defines the graph; equal specs give interchangeable pipelines (checkpoints)."""

    paths: tuple[str, ...]
    index_paths: tuple[str, ...]
    recipe: Recipe
    with_labels: bool
    shard_id: int = 0
    num_shards: int = 1
    shuffle_buffer: int = 1000  # <= 1: read in stored order
    exact_epochs: bool = False  # pad the last batch and stay on this rank's shard (one exact pass)
    gpu: bool = False  # mixed decoder + GPU operators
    sampler: str = "shared"  # shared | dali
    photometric: bool = True
    channels_last: bool = False  # HWC outputs (a free channels-last view on the torch side)


# ---------------------------------------------------------------------------------------------
# View parameters
# ---------------------------------------------------------------------------------------------


class SharedSampler:
    """``fn.python_function`` body: the shared sampler over a batch of peeked shapes.

    Defined at module level and holding only the recipe (never the pipeline, which DALI forbids).
    """

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def __call__(self, shapes: list[np.ndarray], seeds: list[np.ndarray]):
        """Per image ``[H, W, C]`` shape and seed -> lists of windows ``[V, 4]`` float32, flips and turns ``[V]`` int32."""
        windows, flips, turns = [], [], []
        for shape, seed in zip(shapes, seeds):
            p = sample_views(int(shape[1]), int(shape[0]), self.recipe, random.Random(int(seed)))
            windows.append(p.windows.astype(np.float32))
            flips.append(p.flips.astype(np.int32))
            turns.append(p.turns.astype(np.int32))
        return windows, flips, turns


def _shared_params(shape: DataNode, recipe: Recipe):
    seeds = fn.random.uniform(range=[0, 2**31 - 1], dtype=types.INT64)
    return fn.python_function(shape, seeds, function=SharedSampler(recipe), num_outputs=3, batch_processing=True)


def check_sampler(sampler: str, recipe: Recipe) -> None:
    """One-line ValueError for a sampler that does not exist or cannot draw ``recipe``."""
    if sampler not in ("shared", "dali"):
        raise ValueError(f"unknown DALI sampler {sampler!r}; choose shared or dali")
    if sampler == "dali" and (recipe.min_overlap_global > 0 or recipe.min_overlap_local > 0):
        raise ValueError(
            f"recipe {recipe.name!r} has an overlap rule that fn.random_crop_generator cannot express; use the shared sampler"
        )


def _dali_params(shape: DataNode, recipe: Recipe):
    windows, flips, turns = [], [], []
    for spec in recipe.views:
        anchor, size = fn.random_crop_generator(
            shape, random_area=list(spec.scale), random_aspect_ratio=list(spec.ratio), num_attempts=10
        )  # both (y, x) / (h, w), int32
        win = fn.stack(anchor[1], anchor[0], size[1], size[0])
        windows.append(fn.cast(win, dtype=types.FLOAT))
        if spec.flip_p > 0:
            flips.append(fn.random.coin_flip(probability=spec.flip_p, dtype=types.INT32))
        else:
            flips.append(fn.cast(anchor[0] * 0, dtype=types.INT32))
        if spec.rotate:
            turns.append(fn.random.uniform(values=[0, 1, 2, 3], dtype=types.INT32))
        else:
            turns.append(fn.cast(anchor[0] * 0, dtype=types.INT32))
    return fn.stack(*windows), fn.stack(*flips), fn.stack(*turns)


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------


def _on(node: DataNode, gpu: bool):
    """Per-sample CPU values that enter arithmetic with GPU images must live on the GPU too."""
    return node.gpu() if gpu else node


def _coin(probability: float, dtype: types.DALIDataType = types.FLOAT):
    """Per-sample 0/1 draw (coin_flip itself only makes bool/uint8/int32)."""
    return fn.cast(fn.random.coin_flip(probability=probability, dtype=types.INT32), dtype=dtype)


def _contrast(img: DataNode, factor: DataNode, gpu: bool):
    """torchvision's contrast: blend with the image's mean grey level (DALI's own contrast
    operators pivot on mid-grey, 128, instead)."""
    x = fn.cast(img, dtype=types.FLOAT)
    mean = fn.reductions.mean(x, axes=[0, 1])  # [3], on the image's device
    grey = mean[0] * 0.299 + mean[1] * 0.587 + mean[2] * 0.114
    out = grey + _on(factor, gpu) * (x - grey)
    return fn.cast(dmath.clamp(out, 0.0, 255.0), dtype=types.UINT8)


def photometric_params(pm: Photometric) -> dict[str, DataNode]:
    """Per-sample draws of the law of :func:`pipeline.photometric.draw_photometric`, as graph nodes.

    ``brightness``, ``contrast``, ``saturation`` (jitter factors, 1 when jitter is not applied),
    ``hue`` (turns, 0 then), ``gray``, ``blur`` and ``solarize`` (0/1) and ``sigma``; a key is left
    out when its strength or probability is 0 (DALI refuses empty ranges). The factors and
    probabilities are the shared law's (a test compares the two over many draws); the jitter order
    is not: DALI has no per-sample branches, so it applies the jitter ops in a fixed order.
    """
    b, c, s, h = pm.jitter
    on = _coin(pm.jitter_p)

    def factor(amount: float):
        draw = fn.random.uniform(range=[max(0.0, 1.0 - amount), 1.0 + amount])
        return 1.0 + on * (draw - 1.0)

    p = {"gray": _coin(pm.gray_p)}
    for name, amount in (("brightness", b), ("contrast", c), ("saturation", s)):
        if amount > 0:
            p[name] = factor(amount)
    if h > 0:
        p["hue"] = on * fn.random.uniform(range=[-h, h])
    if pm.blur_p > 0:
        p["blur"], p["sigma"] = _coin(pm.blur_p), fn.random.uniform(range=list(pm.blur_sigma))
    if pm.solarize_p > 0:
        p["solarize"] = _coin(pm.solarize_p)
    return p


def _photometric(img: DataNode, pm: Photometric, gpu: bool):
    """Colour jitter (p), grayscale (p), Gaussian blur (p), solarize (p), in torchvision's order,
    with the parameters of :func:`photometric_params`.

    Jitter applies brightness, contrast, saturation, hue in that fixed order (torchvision draws a
    random order). Saturation, hue and grayscale are one ``color_twist`` (grayscale = saturation
    0; hue and saturation commute). DALI's hue rotates the (I, Q) chroma of YIQ, not torchvision's
    HSV hue: up to 37 levels apart on a photo at 36 degrees (docs/extending.md). An augmentation
    that is not applied gets its identity parameters, so the graph has no per-sample branches.
    """
    p = photometric_params(pm)
    if "brightness" in p:
        img = fn.brightness_contrast(img, brightness=p["brightness"])  # saturates at 255 like torchvision
    if "contrast" in p:
        img = _contrast(img, p["contrast"], gpu)
    keep_colour = 1.0 - p["gray"]
    saturation = p["saturation"] * keep_colour if "saturation" in p else keep_colour
    hue = p["hue"] * 360.0 if "hue" in p else 0.0  # DALI's hue is in degrees
    img = fn.color_twist(img, saturation=saturation, hue=hue)
    if "blur" in p:
        # sigma 1e-3 gives a one-tap kernel: the identity, exactly (no branch needed).
        img = fn.gaussian_blur(img, sigma=p["blur"] * p["sigma"] + (1.0 - p["blur"]) * 1e-3)
    if "solarize" in p:
        sol = _on(fn.cast(p["solarize"], dtype=types.INT16), gpu)
        x = fn.cast(img, dtype=types.INT16)
        img = fn.cast(x + (x >= 128) * sol * (255 - 2 * x), dtype=types.UINT8)
    return img


def _view(
    img: DataNode,
    spec: ViewSpec,
    window: DataNode,
    flip: DataNode,
    turns: DataNode,
    origin_x: DataNode,
    origin_y: DataNode,
    g: GraphSpec,
):
    """Cut one view: window relative to the decoded union ROI -> resize (+flip) -> turns -> colour."""
    x0 = window[0] - origin_x
    y0 = window[1] - origin_y
    w, h = window[2], window[3]
    f = fn.cast(flip, dtype=types.FLOAT)
    # A reversed ROI flips: the left edge of the view reads x0 + w when flipped.
    start = fn.stack(y0, x0 + f * w)
    end = fn.stack(y0 + h, x0 + (1.0 - f) * w)
    interp = INTERPOLATION[spec.interpolation]
    view = fn.resize(
        img, size=[spec.size, spec.size], roi_start=start, roi_end=end, min_filter=interp, mag_filter=interp, antialias=True
    )
    if spec.rotate:
        # +90 degrees in DALI == torch.rot90(k=1, dims=(-2, -1)) (geometry.rot90_matrix), checked
        # by the oracle test; nearest neighbour makes quarter turns of a square exact.
        angle = fn.cast(turns, dtype=types.FLOAT) * 90.0
        view = fn.rotate(view, angle=angle, keep_size=True, interp_type=types.INTERP_NN)
    if g.photometric and spec.photometric is not None:
        view = _photometric(view, spec.photometric, g.gpu)
    return fn.crop_mirror_normalize(
        view, dtype=types.UINT8, output_layout="HWC" if g.channels_last else "CHW", mean=[0.0], std=[1.0]
    )


def _graph(g: GraphSpec):
    outputs = fn.readers.webdataset(
        paths=list(g.paths),
        index_paths=list(g.index_paths),
        ext=[IMAGE_EXT, LABEL_EXT] if g.with_labels else [IMAGE_EXT],
        case_sensitive_extensions=False,
        missing_component_behavior="empty",  # a sample without .cls reads as empty -> label -1
        shard_id=g.shard_id,
        num_shards=g.num_shards,
        random_shuffle=g.shuffle_buffer > 1,
        initial_fill=max(1, g.shuffle_buffer),
        pad_last_batch=g.exact_epochs,
        stick_to_shard=g.exact_epochs,
        name=READER_NAME,
    )
    encoded, labels = (outputs[0], outputs[1]) if g.with_labels else (outputs, None)
    # EXIF orientation is ignored, by peek and decoder alike: the geometry refers to the pixels as
    # stored in the shard (docs/geometry.md), which is what the other backends decode too.
    shape = fn.peek_image_shape(encoded, adjust_orientation=False, dtype=types.INT32)  # [H, W, C]
    sampler = _shared_params if g.sampler == "shared" else _dali_params
    windows, flips, turns = sampler(shape, g.recipe)

    # One decode per image: the union of all view windows (ROI decoding skips the rest).
    ux0 = fn.reductions.min(windows[:, 0])
    uy0 = fn.reductions.min(windows[:, 1])
    ux1 = fn.reductions.max(windows[:, 0] + windows[:, 2])
    uy1 = fn.reductions.max(windows[:, 1] + windows[:, 3])
    roi_start = fn.cast(fn.stack(uy0, ux0), dtype=types.INT32)  # windows are whole pixels
    roi_shape = fn.cast(fn.stack(uy1 - uy0, ux1 - ux0), dtype=types.INT32)
    image = fn.decoders.image_slice(
        encoded,
        roi_start,
        roi_shape,
        axis_names="HW",
        output_type=types.RGB,
        adjust_orientation=False,
        device="mixed" if g.gpu else "cpu",
    )
    views = [_view(image, spec, windows[v], flips[v], turns[v], ux0, uy0, g) for v, spec in enumerate(g.recipe.views)]
    info = fn.get_property(encoded, key="source_info")
    extra = [labels] if g.with_labels else []
    return (*views, windows, flips, turns, shape, info, *extra)


def build_pipeline(
    g: GraphSpec,
    *,
    batch_size: int,
    num_threads: int,
    device_id: int | None,
    seed: int,
    prefetch_queue_depth: int = 2,
    checkpoint: bytes | str | None = None,
) -> Pipeline:
    """Build (and ``build()``) the pipeline; ``checkpoint`` resumes from :meth:`Pipeline.checkpoint`."""
    check_sampler(g.sampler, g.recipe)
    pipe = pipeline_def(_graph)(
        g,
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=seed,
        prefetch_queue_depth=prefetch_queue_depth,
        enable_checkpointing=True,
        checkpoint=checkpoint,
    )
    pipe.build()
    return pipe
