"""Fixtures for train/ tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.helpers import write_photo_shards


@pytest.fixture(scope="session")
def photo_shards(tmp_path_factory, real_jpegs) -> Path:
    return write_photo_shards(real_jpegs, tmp_path_factory.mktemp("shards"))
