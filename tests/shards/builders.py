"""Builders of real-layout test datasets over the installed real photos, and shard readers that
do not use the code under test (tarfile / webdataset), for the shards tests; the ``shards``
command line and a quiet class-folder conversion, for the tests that need shards as input."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import tarfile
from pathlib import Path

from PIL import Image

from shards.convert import ConvertOptions, convert
from shards.folder import scan_folder

SMALL = 40_000  # bytes: the photos used by tests are the small ones, to keep tests fast


def small_photos(photos: list[Path], n: int, suffix: str = ".jpg") -> list[Path]:
    """The ``n`` smallest installed photos with ``suffix`` (sorted by size, then name)."""
    chosen = sorted((p for p in photos if p.suffix.lower() == suffix), key=lambda p: (p.stat().st_size, p.name))[:n]
    assert len(chosen) == n, f"need {n} {suffix} photos, found {len(chosen)}"
    return chosen


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header's size (the data stays that of the original image)."""
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return data[: pos + 5] + struct.pack(">HH", height, width) + data[pos + 9 :]
        pos += 2 + length


def bad_inputs(jpeg: Path, png: Path) -> dict[str, tuple[bytes, str | None, str | None]]:
    """name -> (bytes, expected extension or None, expected skip reason or None).

    Every file is derived from a real photo; the expectations come from how the file was made,
    not from the code under test.
    """
    raw = jpeg.read_bytes()
    photo = Image.open(jpeg).convert("RGB")
    corrupt = bytearray(raw)
    for i in range(len(raw) // 3, len(raw) - 16, 97):  # scramble the entropy-coded data
        corrupt[i] = (corrupt[i] * 7 + 13) % 256
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "plain.jpg": (raw, "jpg", None),
        "truncated.jpg": (raw[: len(raw) * 6 // 10], None, "truncated"),
        "corrupt.jpg": (bytes(corrupt), None, "corrupt"),
        "empty.jpg": (b"", None, "empty"),
        "cmyk.jpg": (encode(photo.convert("CMYK"), "JPEG"), "jpg", None),
        "gray.jpg": (encode(photo.convert("L"), "JPEG"), "jpg", None),
        "progressive.jpg": (encode(photo, "JPEG", progressive=True), "jpg", None),
        "rotated.jpg": (encode(photo, "JPEG", exif=exif.tobytes()), "jpg", None),
        "trailing.jpg": (raw + b"\0" * 100 + b"junk after the end marker", "jpg", None),
        "png_named.JPEG": (png.read_bytes(), "png", None),
        "webp_named.jpg": (encode(photo, "WEBP", quality=80), "webp", None),
        "gif_named.jpg": (encode(photo.convert("P"), "GIF"), None, "unsupported-format"),
        "text.jpg": (b"this is not an image\n", None, "not-an-image"),
        "one_pixel.jpg": (encode(photo.resize((1, 1)), "JPEG"), None, "too-small"),
        "huge_header.jpg": (patch_jpeg_size(raw, 20000, 20000), None, "too-large"),
        "wide.jpg": (encode(photo.resize((20000, 20)), "JPEG"), "jpg", None),
    }


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def two_class_files(jpegs: list[Path]) -> dict[str, bytes]:
    """``jpegs`` alternately in class folders c0 and c1: ``c{i % 2}/img{i}.jpg``."""
    return {f"c{i % 2}/img{i}.jpg": p.read_bytes() for i, p in enumerate(jpegs)}


def convert_class_folders(root: Path, files: dict[str, bytes], max_count: int) -> dict:
    """``files`` written under ``root/src``, converted (classes from their first folder, one worker,
    no progress bar) into shards of ``max_count`` samples in ``root/out``; the manifest."""
    write_files(root / "src", files)
    options = ConvertOptions(max_count=max_count, workers=1, progress=False)
    return convert(scan_folder(root / "src", classes_from_dirs=True), root / "out", options)


def read_tar_samples(tar_path: Path) -> dict[str, dict[str, bytes]]:
    """key -> {ext: bytes} with the standard library only (keys split at the first dot)."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


def read_all(out: Path, split: str) -> dict[str, dict[str, bytes]]:
    merged: dict[str, dict[str, bytes]] = {}
    for tar in sorted(out.glob(f"{split}-*.tar")):
        for key, sample in read_tar_samples(tar).items():
            assert key not in merged, f"key {key} in two shards"
            merged[key] = sample
    return merged


def webdataset_count(out: Path, split: str) -> int:
    import webdataset as wds

    urls = [str(p) for p in sorted(out.glob(f"{split}-*.tar"))]
    return sum(1 for _ in wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def tree_bytes(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (hidden ones included) by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def pil_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def cli(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "shards", *args]


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_cli(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``python -m shards *args`` run to its end, its output captured as text."""
    return subprocess.run(cli(*args), capture_output=True, text=True, env=env(), timeout=timeout)
