"""The probe's verdicts on real photos and on bad files derived from them."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shards.probe import ProbeOptions, probe, sniff
from tests.shards.builders import bad_inputs, encode, patch_jpeg_size, pil_size


@pytest.fixture(scope="module")
def cases(small_jpegs: list[Path], small_pngs: list[Path]):
    return bad_inputs(small_jpegs[0], small_pngs[0])


def test_every_bad_input_is_kept_with_its_real_format_or_skipped_with_its_reason(cases):
    for name, (data, ext, reason) in cases.items():
        verdict = probe(data)
        assert verdict.reason == reason, (name, verdict.reason, verdict.detail)
        if ext is not None:
            assert verdict.ext == ext, name
            # sizes come from headers; PIL, an independent parser, must agree
            assert (verdict.width, verdict.height) == pil_size(data), name
        else:
            assert verdict.detail, name  # a skip always says why


def test_colour_modes_and_header_notes(cases):
    assert probe(cases["cmyk.jpg"][0]).mode == "CMYK"
    assert probe(cases["gray.jpg"][0]).mode == "L"
    assert probe(cases["plain.jpg"][0]).mode == "RGB"
    assert probe(cases["rotated.jpg"][0]).notes["exif_orientation"] == 6
    assert probe(cases["progressive.jpg"][0]).notes["progressive"] is True
    assert probe(cases["wide.jpg"][0]).width == 20000


def test_huge_image_is_judged_by_its_header_alone(cases):
    data = cases["huge_header.jpg"][0]
    # the header claims 20000x20000 over the data of a small photo: decoding would call it
    # corrupt, so "too-large" proves the verdict came from the header, before any decode
    assert probe(data).reason == "too-large"
    # within the pixel limit the same lie reaches the decode check, which calls it damaged
    within = probe(patch_jpeg_size(cases["plain.jpg"][0], 9000, 9000))
    assert within.reason in ("corrupt", "truncated")


def test_all_real_photos_are_kept_at_their_true_size(real_photos: list[Path]):
    for path in real_photos:
        data = path.read_bytes()
        verdict = probe(data, ProbeOptions(check_decode=False))  # headers only: fast
        assert verdict.kept, (path, verdict.detail)
        assert (verdict.width, verdict.height) == pil_size(data), path
        assert verdict.ext == {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}[path.suffix.lower()]


def test_decode_check_catches_damage_the_headers_do_not_show(small_pngs: list[Path]):
    png = bytearray(small_pngs[0].read_bytes())
    assert probe(bytes(png)).kept
    png[len(png) // 2] ^= 0xFF  # inside IDAT: the chunk CRC no longer matches
    assert probe(bytes(png)).reason == "corrupt"


def test_sniff_ignores_names_and_knows_common_formats():
    assert sniff(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert sniff(b"\x89PNG\r\n\x1a\nrest") == "png"
    assert sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "webp"
    assert sniff(b"GIF89a....") == "gif"
    assert sniff(b"BM......") == "bmp"
    assert sniff(b"<html>") is None


def _png(w: int, h: int, ctype: int, depth: int, interlace: int, channels: int) -> bytes:
    """A PNG written by hand (PIL cannot write interlaced ones): filter-0 rows, Adam7 passes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rng = np.random.default_rng(w * h + ctype)
    passes = (
        [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
        if interlace
        else [(0, 0, 1, 1)]
    )
    raw = b""
    for x0, y0, dx, dy in passes:
        pw, ph = (w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy
        if pw and ph:
            row = (pw * depth * channels + 7) // 8
            raw += b"".join(b"\0" + rng.integers(0, 256, row, dtype=np.uint8).tobytes() for _ in range(ph))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    palette = chunk(b"PLTE", bytes(range(256)) * 3) if ctype == 3 else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + palette + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("interlace", [0, 1], ids=["plain", "interlaced"])
@pytest.mark.parametrize("ctype,depth,channels", [(0, 1, 1), (0, 16, 1), (2, 8, 3), (3, 4, 1), (4, 8, 2), (6, 16, 4)])
def test_png_pixel_stream_check_accepts_every_layout_pil_decodes(ctype, depth, channels, interlace):
    for w, h in [(17, 23), (33, 5), (1, 40)]:
        data = _png(w, h, ctype, depth, interlace, channels)
        assert pil_size(data) == (w, h)  # PIL decodes it fully: a valid PNG
        verdict = probe(data, ProbeOptions(min_side=1))
        assert verdict.kept and (verdict.width, verdict.height) == (w, h), verdict.detail
        assert probe(data[:-30], ProbeOptions(min_side=1)).reason == "truncated"


def test_webp_variants_have_their_true_size(small_jpegs):
    photo = Image.open(small_jpegs[1]).convert("RGB")
    rgba = photo.convert("RGBA")
    for data in (
        encode(photo, "WEBP", quality=70),
        encode(photo, "WEBP", lossless=True),
        encode(rgba, "WEBP", quality=70),
        encode(rgba, "WEBP", lossless=True),
    ):
        verdict = probe(data)
        assert verdict.kept and verdict.ext == "webp", verdict.detail
        assert (verdict.width, verdict.height) == pil_size(data) == photo.size
        assert probe(data[: len(data) // 2]).reason == "truncated"
