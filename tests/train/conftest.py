"""Fixtures for train/ tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.helpers import write_photo_shards


@pytest.fixture(scope="session")
def photo_shards(tmp_path_factory, real_jpegs) -> Path:
    return write_photo_shards(real_jpegs, tmp_path_factory.mktemp("shards"))


@pytest.fixture()
def fresh_accelerate_state():
    """Accelerate keeps process-wide singletons; each in-process run starts from a clean slate.

    Modules that train in-process use it for every test: ``pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")``.
    """
    from accelerate.state import AcceleratorState, GradientState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
