"""The image limits every part of the project applies: defined once, here.

The converter (:mod:`shards.probe`), ``verify`` and every loader backend (:mod:`pipeline.decode`,
which imports this module; pipeline reading shards keeps the one-way data flow) judge an image by
the same numbers, so a shard never holds an image that a loader rejects on every epoch. The
converter may be stricter (``--min-side`` defaults above :data:`MIN_SIDE`, ``--max-pixels`` may be
lowered) but never looser.

Nothing here imports anything: the module is safe to import from workers and from DALI callbacks.
"""

from __future__ import annotations

# Images with a side below this are broken files for every backend (a 1x1 "photo").
MIN_SIDE = 8
# Images above this many pixels are refused everywhere, judged from the header before any decode:
# decompression bombs and out-of-memory workers (100 MP of RGB is 300 MB once decoded).
MAX_PIXELS = 100_000_000
# The largest encoded size a kept image can need per pixel: a 16-bit RGBA PNG stored without
# compression (JPEG and WebP need less). Files larger than the cap below cannot be a valid image
# within the pixel limit, so they are refused without being read.
MAX_ENCODED_BYTES_PER_PIXEL = 8
# Room for metadata that does not scale with the pixels (EXIF, ICC profiles, XMP, thumbnails).
METADATA_ALLOWANCE = 16 << 20


def max_file_bytes(max_pixels: int = MAX_PIXELS) -> int:
    """The largest file (bytes) that may hold an image of at most ``max_pixels`` pixels."""
    return max_pixels * MAX_ENCODED_BYTES_PER_PIXEL + METADATA_ALLOWANCE


def check_limits(min_side: int, max_pixels: int) -> None:
    """Refuse a converter policy looser than the loaders; ValueError with a one-line reason."""
    if min_side < MIN_SIDE:
        raise ValueError(
            f"min_side {min_side} is below {MIN_SIDE}, the smallest side every loader "
            f"decodes (shards.limits.MIN_SIDE); use {MIN_SIDE} or more"
        )
    if not 0 < max_pixels <= MAX_PIXELS:
        raise ValueError(
            f"max_pixels {max_pixels} is outside 1..{MAX_PIXELS}, the largest image every "
            f"loader decodes (shards.limits.MAX_PIXELS); use at most {MAX_PIXELS}"
        )
