"""The per-sample prologue every worker-side backend runs before making pixels.

Check the sample has an image, read its size from the header, draw every view's geometry on that
size (:func:`pipeline.views.sample_views`) and its photometric parameters (the shared law,
:func:`pipeline.photometric.draw_photometric`), in this order, so that one RNG stream gives the
same views in the cpu and torch backends. :func:`decode_for_views` then decodes at the smallest
DCT scale that leaves every crop at least its output size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.decode import Decoded, DecodeError, choose_scale, decode_image, image_size, is_jpeg
from pipeline.photometric import PhotometricParams, draw_photometric
from pipeline.source import RawSample
from pipeline.views import Recipe, ViewParams, sample_views


@dataclass
class DrawnViews:
    """What was drawn for one sample: its original size and every view's parameters."""

    image: bytes  # the encoded image, as read from the shard
    size: tuple[int, int]  # original (W, H)
    params: ViewParams  # geometry of every view, on the original size
    photometric: list[PhotometricParams]  # one per view


def draw_views(sample: RawSample, recipe: Recipe, rng: random.Random) -> DrawnViews:
    """Draw one sample's views (geometry, then photometric parameters) from ``rng``.

    Raises:
        DecodeError: the sample has no image component, or its header gives no usable size.
    """
    if sample.image is None:
        raise DecodeError(f"sample {sample.key!r} has no image component")
    width, height = image_size(sample.image)
    params = sample_views(width, height, recipe, rng)
    photometric = [draw_photometric(spec.photometric, rng) for spec in recipe.views]
    return DrawnViews(sample.image, (width, height), params, photometric)


def decode_for_views(drawn: DrawnViews, recipe: Recipe, reduced_decode: bool = True) -> Decoded:
    """Decode the image at the smallest DCT scale (``M/8``) that still leaves every view's crop at
    least the view's size; full size when ``reduced_decode`` is off or the image is not a JPEG.

    Raises:
        DecodeError: the image cannot be decoded.
    """
    num = 8
    if reduced_decode and is_jpeg(drawn.image):
        num = choose_scale(*drawn.size, drawn.params.windows, recipe.sizes)
    return decode_image(drawn.image, num)
