"""Decide, from an image's bytes alone, what it really is and whether it belongs in a shard.

The extension on disk is not trusted: ImageNet holds a PNG and CMYK files under ``.JPEG``, and
scraped folders hold WebP or GIF under any name. :func:`probe` sniffs the format from the magic
bytes, reads width/height/colour mode from the headers (cheap: a 20,000-px image is judged by its
header, never decoded at full size), checks the file is complete, and optionally proves that the
data decodes (JPEG at the smallest DCT scale, 1/8, so the check costs a fraction of a decode; PNG
by inflating its pixel stream without keeping it). The verdict is keep-with-extension or skip with
a short reason code plus a human-readable detail.

Kept formats are the ones every backend decodes (libjpeg-turbo/nvJPEG/DALI/torchvision): JPEG,
PNG, WebP. Everything else is skipped as ``unsupported-format``.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass, field

from shards.limits import MAX_PIXELS

# Reason codes for skipped samples (the manifest counts skips by these).
EMPTY = "empty"
UNREADABLE = "unreadable"
NOT_AN_IMAGE = "not-an-image"
UNSUPPORTED = "unsupported-format"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
TOO_SMALL = "too-small"
TOO_LARGE = "too-large"

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}  # format -> extension stored in shards
IMAGE_EXTENSIONS = tuple(EXTENSIONS.values())


@dataclass(frozen=True)
class ProbeOptions:
    """Keep/skip policy; part of a conversion's fingerprint because it changes the output.

    A conversion refuses a policy looser than :mod:`shards.limits` (:class:`ConvertOptions`);
    probing alone accepts any, e.g. to study tiny test images.
    """

    min_side: int = 16  # smaller images are useless for multi-crop and skipped
    max_pixels: int = MAX_PIXELS  # larger ones are skipped before any decode (decompression bombs)
    check_decode: bool = True  # prove the data decodes (reduced-scale), not only the headers


@dataclass
class Probe:
    """Verdict on one file. ``reason`` is None when the image is kept."""

    reason: str | None = None
    detail: str = ""
    format: str | None = None  # jpeg | png | webp | (name of an unsupported format)
    width: int = 0
    height: int = 0
    mode: str = ""  # L, RGB, CMYK, YCCK, LA, RGBA, P, ...
    notes: dict = field(default_factory=dict)  # e.g. exif_orientation, decoder warnings

    @property
    def kept(self) -> bool:
        """Whether the image goes into the shard (no skip reason)."""
        return self.reason is None

    @property
    def ext(self) -> str:
        """The extension it is stored under (``jpg``, ``png``, ``webp``; ``""`` otherwise)."""
        return EXTENSIONS.get(self.format or "", "")


class _Bad(Exception):
    """Raised inside the parsers with a (reason, detail) verdict."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def sniff(data: bytes) -> str | None:
    """Format from magic bytes: jpeg, png, webp, an unsupported name (gif, ...), or None."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp":
        return "heif/avif"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51":
        return "jpeg2000"
    if head[:4] == b"8BPS":
        return "psd"
    return None


def probe(data: bytes, options: ProbeOptions = ProbeOptions()) -> Probe:
    """Judge one file's bytes; never raises on bad data."""
    if not data:
        return Probe(EMPTY, "zero-byte file")
    fmt = sniff(data)
    if fmt is None:
        return Probe(NOT_AN_IMAGE, f"unknown format (first bytes {data[:8].hex()})")
    if fmt not in EXTENSIONS:
        return Probe(UNSUPPORTED, f"{fmt} is not kept (only JPEG, PNG, WebP)", format=fmt)
    result = Probe(format=fmt)
    try:
        {"jpeg": _jpeg_header, "png": _png_header, "webp": _webp_header}[fmt](data, result)
        _check_size(result, options)
        if options.check_decode:
            {"jpeg": _jpeg_decode, "png": _png_decode, "webp": _webp_decode}[fmt](data, result)
    except _Bad as bad:
        result.reason, result.detail = bad.reason, f"{fmt}: {bad.detail}"
    except Exception as exc:  # a parser bug or an exotic file must not stop a conversion
        result.reason, result.detail = CORRUPT, f"{fmt}: {type(exc).__name__}: {exc}"
    return result


def _check_size(p: Probe, options: ProbeOptions) -> None:
    if p.width <= 0 or p.height <= 0:
        raise _Bad(CORRUPT, f"invalid size {p.width}x{p.height}")
    if min(p.width, p.height) < options.min_side:
        raise _Bad(TOO_SMALL, f"{p.width}x{p.height} has a side below --min-side {options.min_side}")
    if p.width * p.height > options.max_pixels:
        raise _Bad(TOO_LARGE, f"{p.width}x{p.height} exceeds --max-pixels {options.max_pixels}")


# ---------------------------------------------------------------- JPEG

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RSTn: no length field


def _jpeg_header(data: bytes, p: Probe) -> None:
    """Walk the marker segments up to the first scan: size, components, Adobe transform, EXIF."""
    pos, n = 2, len(data)
    components, adobe_transform, sos = 0, None, -1
    while pos < n:
        if data[pos] != 0xFF:
            raise _Bad(CORRUPT, f"expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker == 0xD9:
            raise _Bad(CORRUPT, "end of image before any scan")
        if pos + 2 > n:
            break
        length = struct.unpack(">H", data[pos : pos + 2])[0]
        if length < 2 or pos + length > n:
            raise _Bad(TRUNCATED, f"segment 0x{marker:02X} runs past the end of the file")
        seg = data[pos + 2 : pos + length]
        if marker in _SOF_MARKERS:
            if len(seg) < 6:
                raise _Bad(CORRUPT, "short frame header")
            p.height, p.width = struct.unpack(">HH", seg[1:5])
            components = seg[5]
            if marker in (0xC2, 0xC6, 0xCA, 0xCE):
                p.notes["progressive"] = True
        elif marker == 0xEE and seg[:5] == b"Adobe" and len(seg) >= 12:
            adobe_transform = seg[11]
        elif marker == 0xE1 and seg[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(seg[6:])
            if orientation not in (None, 1):
                # Decoders here ignore EXIF; the geometry contract is about the stored pixels,
                # so the orientation is only recorded for whoever wants to honour it.
                p.notes["exif_orientation"] = orientation
        elif marker == 0xDA:
            sos = pos
            break
        pos += length
    if sos < 0:
        raise _Bad(TRUNCATED, "file ends before the first scan")
    if components == 0:
        raise _Bad(CORRUPT, "no frame header before the scan")
    if p.height == 0:
        raise _Bad(CORRUPT, "height 0 (DNL-defined height is not supported)")
    p.mode = {1: "L", 3: "RGB", 4: "YCCK" if adobe_transform == 2 else "CMYK"}.get(components, "")
    if not p.mode:
        raise _Bad(CORRUPT, f"{components} colour components")
    # The entropy-coded data ends with EOI; trailing bytes after it are common and harmless.
    if data.rfind(b"\xff\xd9", sos) < 0:
        raise _Bad(TRUNCATED, "no end-of-image marker (file cut short)")


def _exif_orientation(tiff: bytes) -> int | None:
    """Orientation tag (0x0112) of IFD0, or None."""
    try:
        endian = {b"II": "<", b"MM": ">"}[tiff[:2]]
        ifd = struct.unpack(endian + "I", tiff[4:8])[0]
        count = struct.unpack(endian + "H", tiff[ifd : ifd + 2])[0]
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, typ = struct.unpack(endian + "HH", entry[:4])
            if tag == 0x0112 and typ == 3:
                return struct.unpack(endian + "H", entry[8:10])[0]
    except (KeyError, struct.error, IndexError):
        return None
    return None


def _jpeg_decode(data: bytes, p: Probe) -> None:
    import simplejpeg

    colorspace = {"L": "GRAY", "CMYK": "CMYK", "YCCK": "CMYK"}.get(p.mode, "RGB")
    try:
        # min_height/min_width=1 selects libjpeg's smallest DCT scale (1/8): every coefficient is
        # still entropy-decoded (that is what catches corruption) but almost no IDCT work is done.
        simplejpeg.decode_jpeg(data, colorspace=colorspace, min_height=1, min_width=1, strict=True)
    except (ValueError, RuntimeError) as exc:
        msg = str(exc).strip()
        raise _Bad(TRUNCATED if "Premature end" in msg else CORRUPT, f"decoder: {msg}") from None


# ---------------------------------------------------------------- PNG

_PNG_MODES = {0: ("L", 1), 2: ("RGB", 3), 3: ("P", 1), 4: ("LA", 2), 6: ("RGBA", 4)}


def _png_chunks(data: bytes):
    """Yield (type, payload) of every chunk, checking bounds and CRCs, ending at IEND."""
    pos, n = 8, len(data)
    while True:
        if pos + 8 > n:
            raise _Bad(TRUNCATED, "file ends before IEND")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > n:
            raise _Bad(TRUNCATED, f"chunk {ctype!r} runs past the end of the file")
        payload = data[pos + 8 : pos + 8 + length]
        crc = struct.unpack(">I", data[end - 4 : end])[0]
        if zlib.crc32(ctype + payload) & 0xFFFFFFFF != crc:
            raise _Bad(CORRUPT, f"bad CRC in chunk {ctype.decode('latin-1')}")
        yield ctype, payload
        if ctype == b"IEND":
            return
        pos = end


def _png_header(data: bytes, p: Probe) -> None:
    if data[12:16] != b"IHDR" or len(data) < 33:
        raise _Bad(CORRUPT if len(data) >= 33 else TRUNCATED, "missing IHDR")
    p.width, p.height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if ctype not in _PNG_MODES:
        raise _Bad(CORRUPT, f"colour type {ctype}")
    p.mode = _PNG_MODES[ctype][0]
    if depth == 16:
        p.notes["bit_depth"] = 16
    if interlace:
        p.notes["interlaced"] = True
    for _ in _png_chunks(data):  # structure + CRCs: catches truncation and flipped bytes cheaply
        pass


def _png_raw_size(width: int, height: int, bits_per_pixel: int, interlaced: bool) -> int:
    """Bytes of the filtered scanlines the IDAT stream must inflate to."""

    def rows(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * bits_per_pixel + 7) // 8)

    if not interlaced:
        return rows(width, height)
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    return sum(rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in passes)


def _png_decode(data: bytes, p: Probe) -> None:
    depth, ctype, interlace = data[24], data[25], data[28]
    expected = _png_raw_size(p.width, p.height, depth * _PNG_MODES[ctype][1], bool(interlace))
    inflater, total = zlib.decompressobj(), 0
    try:
        for ctype_, payload in _png_chunks(data):
            if ctype_ != b"IDAT":
                continue
            # Inflate in bounded pieces: a huge image never sits in memory.
            out = inflater.decompress(payload, 1 << 20)
            total += len(out)
            while inflater.unconsumed_tail:
                total += len(inflater.decompress(inflater.unconsumed_tail, 1 << 20))
        total += len(inflater.flush())
    except zlib.error as exc:
        raise _Bad(CORRUPT, f"pixel stream: {exc}") from None
    if not inflater.eof or total != expected:
        raise _Bad(TRUNCATED if total < expected else CORRUPT, f"pixel stream holds {total} bytes, {expected} expected")


# ---------------------------------------------------------------- WebP


def _webp_header(data: bytes, p: Probe) -> None:
    riff_size = struct.unpack("<I", data[4:8])[0] + 8
    if riff_size > len(data):
        raise _Bad(TRUNCATED, f"RIFF says {riff_size} bytes, file has {len(data)}")
    chunk = data[12:16]
    body = data[20:]
    if chunk == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", body[6:10])
        p.width, p.height, p.mode = w & 0x3FFF, h & 0x3FFF, "RGB"
    elif chunk == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        p.width, p.height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        p.mode = "RGBA" if (bits >> 28) & 1 else "RGB"
    elif chunk == b"VP8X" and len(body) >= 10:
        flags = body[0]
        if flags & 0x02:
            raise _Bad(UNSUPPORTED, "animated WebP")
        p.width = int.from_bytes(body[4:7], "little") + 1
        p.height = int.from_bytes(body[7:10], "little") + 1
        p.mode = "RGBA" if flags & 0x10 else "RGB"
    else:
        raise _Bad(CORRUPT, f"unknown WebP chunk {chunk!r}")


def _webp_decode(data: bytes, p: Probe) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # WebP has no reduced decode; the pixel cap above bounds the cost
    except Exception as exc:
        raise _Bad(CORRUPT, f"decoder: {exc}") from None
