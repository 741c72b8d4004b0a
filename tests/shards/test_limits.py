"""One image-size limit for the converter, ``verify`` and every loader (shards.limits).

Before: the converter kept a 90-megapixel JPEG (its probe allowed 100 MP) that the cpu backend
counted as a bad sample on every epoch (its decoder allowed 80 MP), and ``verify`` passed.
"""

import pytest

from pipeline.decode import DecodeError, image_size
from shards.convert import ConvertOptions
from shards.limits import MAX_PIXELS, MIN_SIDE
from shards.probe import ProbeOptions, probe
from tests.shards.builders import patch_jpeg_size, run_cli


def _loader_accepts(data: bytes) -> bool:
    try:
        image_size(data)  # the size check every backend's workers apply before decoding
    except DecodeError:
        return False
    return True


@pytest.mark.parametrize(
    "width, height",
    [
        (10_000, 9_000),  # 90 MP: kept by the converter and refused by the loader before
        (10_000, MAX_PIXELS // 10_000),  # exactly at the limit
        (10_000, MAX_PIXELS // 10_000 + 1),  # just over it
        (60_000, 2_000),  # 120 MP, a panorama
        (MIN_SIDE, 500),
        (MIN_SIDE - 1, 500),  # the smallest side
    ],
)
def test_converter_keeps_exactly_what_the_loaders_decode(width, height, small_jpegs):
    data = patch_jpeg_size(small_jpegs[0].read_bytes(), width, height)
    within = width * height <= MAX_PIXELS and min(width, height) >= MIN_SIDE  # from the definition
    # the converter with its loosest allowed policy (headers only: the data is not this size)
    loosest = ProbeOptions(min_side=MIN_SIDE, max_pixels=MAX_PIXELS, check_decode=False)
    assert probe(data, loosest).kept == within
    assert probe(data, ProbeOptions(check_decode=False)).kept == (within and min(width, height) >= 16)
    assert _loader_accepts(data) == within


def test_converter_policy_cannot_be_looser_than_the_loaders(tmp_path):
    with pytest.raises(ValueError, match="MAX_PIXELS"):
        ConvertOptions(probe=ProbeOptions(max_pixels=MAX_PIXELS + 1))
    with pytest.raises(ValueError, match="MIN_SIDE"):
        ConvertOptions(probe=ProbeOptions(min_side=MIN_SIDE - 1))
    (tmp_path / "src").mkdir()
    for flag, value in (("--max-pixels", MAX_PIXELS + 1), ("--min-side", MIN_SIDE - 1)):
        done = run_cli("folder", str(tmp_path / "src"), str(tmp_path / "out"), flag, str(value))
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and flag[2:].replace("-", "_") in done.stderr


@pytest.mark.parametrize("side, kept", [(8, True), (7, False), (16, True), (9, True)])
def test_documented_smallest_side_is_8_pixels(side, kept, small_jpegs):
    """The README and shards/limits.py document 8 px: pinned by value, not by the constant's name
    (a mutant MIN_SIDE = 16 passed every test that reads the constant)."""
    data = patch_jpeg_size(small_jpegs[0].read_bytes(), side, 500)
    assert _loader_accepts(data) == kept
    loosest = ProbeOptions(min_side=8, max_pixels=MAX_PIXELS, check_decode=False)
    assert probe(data, loosest).kept == kept
    if kept:
        ConvertOptions(probe=ProbeOptions(min_side=8))  # the documented floor is an allowed policy
