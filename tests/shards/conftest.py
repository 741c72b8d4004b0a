"""Fixtures of the shards tests: small real photos (the session fixtures of tests/conftest.py)."""

from pathlib import Path

import pytest

from tests.shards.builders import small_photos


@pytest.fixture(scope="session")
def small_jpegs(real_photos: list[Path]) -> list[Path]:
    """The 12 smallest installed JPEG photos (real camera files, ~25-35 KB each)."""
    return small_photos(real_photos, 12, ".jpg")


@pytest.fixture(scope="session")
def small_pngs(real_photos: list[Path]) -> list[Path]:
    """The 2 smallest installed PNG photos."""
    return small_photos(real_photos, 2, ".png")
