"""Damaged JPEGs decoded by the lenient fallback are counted (``recovered_samples``), not silent.

Before: a JPEG with 2,000 zeroed bytes mid-scan was decoded by the PIL fallback and counted
nowhere.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.backends.cpu_backend import build_cpu_loader
from pipeline.decode import decode_image, recovered_decodes
from tests.pipeline.helpers import (
    run_with_timeout,
    small_jpegs,
    strict_refuses_lenient_reads,
    tiny_config,
    write_shards,
    zero_mid_scan,
)


@pytest.fixture(scope="module")
def images(real_jpegs) -> tuple[list[bytes], bytes]:
    """Clean JPEGs and one whose zeroed bytes libjpeg-turbo (strict) refuses but PIL reads."""
    clean = small_jpegs(real_jpegs, 12, max_side=160)
    damaged = next(d for d in map(zero_mid_scan, clean) if strict_refuses_lenient_reads(d))
    return clean[:7], damaged


def test_decode_flags_and_counts_only_fallback_decodes(images):
    clean, damaged = images
    before = recovered_decodes()
    assert not decode_image(clean[0]).recovered and not decode_image(clean[0], 2).recovered
    photo = Image.open(io.BytesIO(clean[0])).convert("CMYK")  # PIL's own path, not a recovery
    buf = io.BytesIO()
    photo.save(buf, "JPEG")
    assert not decode_image(buf.getvalue()).recovered
    assert recovered_decodes() == before
    for num in (8, 2):
        out = decode_image(damaged, num)
        assert out.recovered and out.image.shape[2] == 3
    assert recovered_decodes() == before + 2


def test_loader_counts_the_recovered_sample_once(images, tmp_path):
    clean, damaged = images
    write_shards(tmp_path / "s", clean + [damaged], n_shards=2)
    loader = build_cpu_loader(tiny_config(str(tmp_path / "s"), num_workers=1))
    keys = run_with_timeout(lambda: [k for b in loader for k in b.keys])
    assert len(keys) == 8  # kept: it decodes, if damaged
    stats = loader.stats
    assert (stats["samples"], stats["bad_samples"], stats["recovered_samples"]) == (8, 0, 1)
    assert stats["image_bytes"] == sum(map(len, clean)) + len(damaged)
