"""scripts/make_bench_images.py: deterministic JPEGs from the real photos, in either size law."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _make(out: Path, *flags: str) -> list[Path]:
    cmd = [sys.executable, "scripts/make_bench_images.py", str(out), "--count", "6", *flags]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=120)
    return sorted(out.glob("*.jpg"))


def test_imagenet_sizes_are_deterministic_jpegs_of_imagenets_sizes(real_photos, tmp_path):
    first = _make(tmp_path / "a", "--imagenet-sizes")
    again = _make(tmp_path / "b", "--imagenet-sizes")
    assert len(first) == 6 and [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    for p in first:
        with Image.open(p) as im:
            assert im.format == "JPEG" and 200 <= max(im.size) <= 1200
            im.load()  # decodes whole


def test_default_sizes_have_imagenets_short_sides(real_photos, tmp_path):
    for p in _make(tmp_path):
        with Image.open(p) as im:
            assert 333 <= min(im.size) <= 500
