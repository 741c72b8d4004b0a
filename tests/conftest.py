"""Shared fixtures: the real photos installed by scripts/setup.sh (tests skip without them)."""

from pathlib import Path

import pytest

from shards.photos import MISSING_HINT, available_photos


@pytest.fixture(scope="session")
def real_photos() -> list[Path]:
    """All installed real photos (JPEG and PNG)."""
    photos = available_photos()
    if not photos:
        pytest.skip(MISSING_HINT)
    return photos


@pytest.fixture(scope="session")
def real_jpegs() -> list[Path]:
    """Installed real JPEG photos only."""
    photos = available_photos((".jpg", ".jpeg"))
    if len(photos) < 4:
        pytest.skip(MISSING_HINT)
    return photos
