"""``--resume auto`` whose newest checkpoint is unreadable continues from the newest readable one."""

from __future__ import annotations

import pytest

from tests.train.helpers import read_log, tiny_overrides
from train.config import load_config
from train.loop import train

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py


def test_resume_auto_skips_a_truncated_newest_checkpoint(photo_shards, tmp_path, caplog):
    out = tmp_path / "run"
    extra = {"train.epochs": 1, "checkpoint.keep_last": 2, "checkpoint.export": False}
    assert train(load_config(None, tiny_overrides(photo_shards, out, extra))).step == 4
    newest = out / "checkpoints" / "ckpt-00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # an interrupted copy, a disk error
    # Before: ValueError "not a readable checkpoint" and the run stops.
    with caplog.at_level("WARNING", logger="train.checkpoint"):
        result = train(load_config(None, tiny_overrides(photo_shards, out, {**extra, "train.max_steps": 3})), resume="auto")
    assert result.step == 3
    resumed = [r for r in read_log(out) if r.get("event") == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] == 2 and resumed[0]["checkpoint"].endswith("ckpt-00000002.pt")
    assert "ckpt-00000004.pt" in caplog.text and "resuming from" in caplog.text
