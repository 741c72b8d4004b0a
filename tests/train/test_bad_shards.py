"""Broken shards are visible, counted once, and stop a run above ``data.max_bad_fraction``
(issue 20, item 3).

Before: with 4 of 12 shards damaged, ``bad_shards`` was neither logged nor reported; one broken
image was counted 113 times (re-read while the shuffle buffer filled); with 6 of 12 shards of
zero length the log said ``bad_samples 0`` and the run silently trained on half the data."""

from __future__ import annotations

import pytest

from pipeline.config import LoaderConfig
from pipeline.data_issues import MIN_READS, DataQualityError, check_bad_fraction
from pipeline.loader import build_loader
from tests.train.helpers import read_log, tiny_overrides, write_photo_shards
from train.config import load_config
from train.loop import train

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py


def _shards(tmp_path, real_jpegs, damaged: int = 0, empty: int = 0):
    out = write_photo_shards(real_jpegs, tmp_path / "shards", per_shard=2, count=24)
    tars = sorted(out.glob("*.tar"))
    assert len(tars) == 12
    for t in tars[:damaged]:
        t.write_bytes(t.read_bytes()[:700])  # cut inside the first member
    for t in tars[damaged : damaged + empty]:
        t.write_bytes(b"")
    return out, tars


def _loader_stats(shards, **fields):
    cfg = LoaderConfig(
        shards=str(shards), global_size=32, local_size=16, num_local=0, batch_size=4, num_workers=0,
        pin_memory=False, **fields,
    )  # fmt: skip
    loader = build_loader(cfg)
    for _ in loader:
        pass
    return loader.stats, loader


def test_a_bad_sample_read_again_is_counted_once(tmp_path, real_jpegs):
    out, tars = _shards(tmp_path, real_jpegs)
    import webdataset as wds

    with wds.TarWriter(str(tars[0])) as w:  # a shard whose second image is not a JPEG
        w.write({"__key__": "good", "jpg": real_jpegs[0].read_bytes(), "cls": b"0"})
        w.write({"__key__": "broken", "jpg": b"\xff\xd8\xff not a jpeg", "cls": b"0"})
    stats, _ = _loader_stats(out, samples_per_epoch=200, shuffle_buffer=100)  # every shard read ~8 times
    assert stats["bad_reads"] > 1 and stats["bad_samples"] == 1


def test_damaged_and_empty_shards_are_counted_once_each(tmp_path, real_jpegs):
    out, tars = _shards(tmp_path, real_jpegs, damaged=2, empty=3)
    stats, loader = _loader_stats(out, samples_per_epoch=96, shuffle_buffer=8)
    assert stats["bad_shards"] == 5 and stats["empty_shards"] == 3
    assert set(loader.issues.shard_names()) == {str(t) for t in tars[:5]}


def test_check_bad_fraction():
    check_bad_fraction({"bad_shards": 0, "samples": 1000}, 12, 0.01, [])
    with pytest.raises(DataQualityError) as e:
        check_bad_fraction({"bad_shards": 6, "empty_shards": 6}, 12, 0.01, [f"s{i}.tar" for i in range(6)])
    assert "6 of 12 shards unreadable, 6 of them empty" in str(e.value) and "s0.tar" in str(e.value)
    check_bad_fraction({"bad_reads": 5, "samples": 10}, 100, 0.01, [])  # too few reads to judge
    with pytest.raises(DataQualityError, match="of sample reads failed"):
        check_bad_fraction({"bad_reads": 5, "samples": MIN_READS}, 100, 0.01, ["a.tar"])


def test_training_stops_on_bad_shards_and_reports_them(tmp_path, real_jpegs):
    shards, tars = _shards(tmp_path, real_jpegs, damaged=4)
    extra = {"train.epochs": 1, "checkpoint.export": False, "data.samples_per_epoch": 16}
    with pytest.raises(DataQualityError) as e:
        train(load_config(None, tiny_overrides(shards, tmp_path / "a", extra)))
    message = str(e.value)
    assert "\n" not in message and "of 12 shards unreadable" in message and "data.max_bad_fraction=0.01" in message
    assert any(t.name in message for t in tars[:4])

    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    result = train(load_config(None, tiny_overrides(shards, tmp_path / "b", {**extra, "data.max_bad_fraction": 1.0})))
    logged = [r for r in read_log(tmp_path / "b") if "loss" in r]
    assert logged[-1]["bad_shards"] >= 1 and "bad_shards" in logged[0]
    assert f"{logged[-1]['bad_shards']} bad shards" in result.summary
