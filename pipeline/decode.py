"""Image decoding for DataLoader workers: libjpeg-turbo at a reduced DCT scale, PIL for the rest.

libjpeg-turbo decodes a JPEG at ``M/8`` of its size by shrinking every 8x8 DCT block to ``M x M``
pixels, so decoded pixel ``j`` covers original pixels ``[8j/M, 8(j+1)/M)``: the decoded image is the
original scaled by exactly ``M/8`` about the origin (``geometry.scale_matrix(M/8)``), and its size
is ``ceil(W * M / 8) x ceil(H * M / 8)``. simplejpeg exposes this through ``min_width/min_height``
(it picks the smallest factor whose output is at least that large); we ask for the size of the
factor we want and read the factor back from the output size, so the reported scale is the one
libjpeg really used.

Only the power-of-two factors 1/8, 1/4, 1/2 and 1 are used: libjpeg-turbo has SIMD inverse DCTs
for them, while 3/8, 5/8, 3/4 and 7/8 measured as slow as (or slower than) a full decode.

Errors: any undecodable input raises :class:`DecodeError` (a ``ValueError``), which callers count
as a bad sample; nothing else escapes :func:`decode_image` for bad bytes.

Recovered images: a JPEG that libjpeg-turbo refuses in strict mode (corrupt entropy-coded data, a
cut-off scan, or a file libjpeg merely warns about) is handed to PIL, whose lenient decoder fills
what it cannot read (grey blocks). Such an image is usable but damaged, so it is never silent:
:attr:`Decoded.recovered` says so, and :func:`recovered_decodes` counts them per process, which
:class:`pipeline.bad_samples.BadSampleGuard` turns into the loaders' ``recovered_samples`` stat.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

# The one image-size limit of the project (shards and every backend): smaller or larger images are
# bad samples here, skipped by the converter and failed by ``verify``.
from shards.limits import MAX_PIXELS, MIN_SIDE

# DCT scale numerators (over 8) that are worth using, smallest first (see module docstring).
JPEG_SCALES = (1, 2, 4, 8)
JPEG_MAGIC = b"\xff\xd8\xff"


class DecodeError(ValueError):
    """The bytes are not an image we can use (corrupt, truncated, tiny, huge, unknown format)."""


@dataclass
class Decoded:
    """A decoded image.

    Attributes:
        image: ``[h, w, 3]`` uint8 RGB, C-contiguous.
        scale: decoded pixels per original pixel (``M/8`` for reduced JPEG decoding, else 1.0);
            ``image`` is the original scaled by exactly this factor about the origin.
        width, height: original size ``(W, H)`` as stored in the shard.
    """

    image: np.ndarray
    scale: float
    width: int
    height: int
    recovered: bool = False  # a JPEG libjpeg-turbo refused, decoded by PIL's lenient fallback


_recovered_decodes = 0  # this process's recovered JPEGs (see the module docstring)


def recovered_decodes() -> int:
    """How many JPEGs this process decoded only through PIL's lenient fallback (monotonic)."""
    return _recovered_decodes


def is_jpeg(data: bytes) -> bool:
    """Whether ``data`` starts with the JPEG magic bytes."""
    return data[:3] == JPEG_MAGIC


def _check_size(width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise DecodeError(f"image too small: {width}x{height} (minimum side {MIN_SIDE})")
    if width * height > MAX_PIXELS:
        raise DecodeError(f"image too large: {width}x{height} (> {MAX_PIXELS} pixels)")


def _open_pil(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL warns (then errors) on decompression bombs; our own MAX_PIXELS check decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Exception as e:  # PIL raises many types for bad bytes
        raise DecodeError(f"unreadable image: {type(e).__name__}: {e}") from None


def image_size(data: bytes) -> tuple[int, int]:
    """Original ``(W, H)`` from the header only (no pixel decoding). Raises :class:`DecodeError`."""
    if is_jpeg(data):
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            w, h = _open_pil(data).size  # libjpeg-turbo refused the header: let PIL judge
    else:
        w, h = _open_pil(data).size
    _check_size(w, h)
    return int(w), int(h)


def scaled_size(width: int, height: int, num: int) -> tuple[int, int]:
    """Size libjpeg gives an image decoded at ``num/8``: ``ceil(W * num / 8) x ceil(H * num / 8)``."""
    return math.ceil(width * num / 8), math.ceil(height * num / 8)


def decoded_window(
    window: tuple[float, float, float, float], scale: float, decoded_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Map an original-image window ``(x0, y0, w, h)`` to integer decoded pixels.

    Edges are rounded to the nearest decoded pixel boundary and clipped to the decoded image; the
    window keeps at least one pixel. Returns ``(x0, y0, w, h)`` in decoded pixels.
    """
    x0, y0, w, h = window
    dw, dh = decoded_size
    left = min(max(round(x0 * scale), 0), dw - 1)
    top = min(max(round(y0 * scale), 0), dh - 1)
    right = min(max(round((x0 + w) * scale), left + 1), dw)
    bottom = min(max(round((y0 + h) * scale), top + 1), dh)
    return left, top, right - left, bottom - top


def choose_scale(width: int, height: int, windows: np.ndarray, sizes: list[int] | np.ndarray) -> int:
    """Smallest DCT numerator ``M`` (of :data:`JPEG_SCALES`) such that every view's crop window,
    decoded at ``M/8`` and rounded to decoded pixels, still has at least the view's output size in
    both dimensions (so no view is upsampled because of the reduced decode).

    Args:
        width, height: original image size.
        windows: ``[V, 4]`` crop windows ``(x0, y0, w, h)`` in original pixels.
        sizes: ``[V]`` square output sizes.

    Returns:
        ``M`` in ``JPEG_SCALES``; 8 (full decode) when no smaller factor suffices.
    """
    for num in JPEG_SCALES[:-1]:
        dsize = scaled_size(width, height, num)
        ok = True
        for win, size in zip(windows, sizes):
            _, _, w, h = decoded_window(tuple(win), num / 8, dsize)
            if w < size or h < size:
                ok = False
                break
        if ok:
            return num
    return 8


def _jpeg_numerator(width: int, height: int, out_w: int, out_h: int) -> int:
    for num in range(1, 9):
        if scaled_size(width, height, num) == (out_w, out_h):
            return num
    raise DecodeError(f"decoder returned {out_w}x{out_h} for a {width}x{height} JPEG: no M/8 scale matches")


def _decode_jpeg_turbo(data: bytes, width: int, height: int, num: int) -> Decoded:
    dw, dh = scaled_size(width, height, num)
    img = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=dw, min_height=dh)
    got = _jpeg_numerator(width, height, img.shape[1], img.shape[0])
    return Decoded(img, got / 8, width, height)


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """PIL image of any mode -> ``[h, w, 3]`` uint8 RGB (alpha dropped, 16-bit reduced to 8)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # PIL's I -> RGB conversion clips at 255 instead of rescaling; keep the top 8 bits.
        a = np.asarray(im).astype(np.uint32) >> (8 if im.mode.startswith("I;16") else 24)
        a = a.astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im)  # writable (np.asarray of a PIL image is read-only)


def _decode_pil(data: bytes, num: int) -> Decoded:
    im = _open_pil(data)
    width, height = im.size
    _check_size(width, height)
    try:
        if im.format == "JPEG" and num < 8:
            # draft() uses the same DCT scaling (1/2, 1/4, 1/8), e.g. for CMYK/YCCK JPEGs.
            dw, dh = scaled_size(width, height, num)
            im.draft(im.mode, (dw, dh))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
        arr = _to_rgb_array(im)
    except DecodeError:
        raise
    except Exception as e:  # truncated data, bad chunks, ... — PIL raises many types
        raise DecodeError(f"undecodable image: {type(e).__name__}: {e}") from None
    if (arr.shape[1], arr.shape[0]) == (width, height):
        return Decoded(arr, 1.0, width, height)
    got = _jpeg_numerator(width, height, arr.shape[1], arr.shape[0])
    return Decoded(arr, got / 8, width, height)


def decode_image(data: bytes, num: int = 8) -> Decoded:
    """Decode to RGB at ``num/8`` of the original size where the format allows it.

    JPEG (YCbCr or grayscale) goes through libjpeg-turbo at the requested DCT scale; CMYK/YCCK
    JPEGs, JPEGs libjpeg-turbo rejects in strict mode (it also rejects merely-warned files) and
    every other format (PNG, WebP, BMP, ...) go through PIL, which may only decode at full size:
    always read :attr:`Decoded.scale`.

    Args:
        data: encoded bytes.
        num: requested scale numerator (1, 2, 4 or 8).

    Raises:
        DecodeError: bytes that no decoder accepts, or images outside ``[MIN_SIDE, MAX_PIXELS]``.
    """
    if num not in JPEG_SCALES:
        raise ValueError(f"scale numerator must be one of {JPEG_SCALES}, got {num}")
    if is_jpeg(data):
        try:
            h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return _recover(data, num)
        _check_size(w, h)
        if colorspace not in ("CMYK", "YCCK"):  # PIL handles Adobe's inverted CMYK correctly
            try:
                return _decode_jpeg_turbo(data, w, h, num)
            except DecodeError:
                raise
            except ValueError:
                return _recover(data, num)  # strict libjpeg-turbo error (corrupt, cut, a warning)
    return _decode_pil(data, num)


def _recover(data: bytes, num: int) -> Decoded:
    """PIL's lenient decode of a JPEG libjpeg-turbo refused; counted when it succeeds."""
    global _recovered_decodes
    decoded = _decode_pil(data, num)
    decoded.recovered = True
    _recovered_decodes += 1
    return decoded
