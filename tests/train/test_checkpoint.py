"""Checkpoint files: atomic writes, keep-last-k, weights_only loading, --resume auto, RNG states."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import train.checkpoint as ckpt


def _state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((4, 4), float(step))}, "config": {"a": [1, 2]}}


def test_keep_last_and_latest(tmp_path):
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(_state(step), tmp_path, step, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000030.pt", "ckpt-00000040.pt"]
    assert ckpt.resolve_resume("auto", tmp_path).name == "ckpt-00000040.pt"
    assert ckpt.load_checkpoint(tmp_path / "ckpt-00000040.pt")["model"]["w"][0, 0] == 40


class Crash(Exception):
    pass


def test_crash_during_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    ckpt.save_checkpoint(_state(1), tmp_path, 1, keep_last=1)
    good = (tmp_path / "ckpt-00000001.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half a file on disk, then the process "dies"
        raise Crash()

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(Crash):
        ckpt.save_checkpoint(_state(2), tmp_path, 2, keep_last=1)
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-00000001.pt"]  # keep_last did not run
    assert (tmp_path / "ckpt-00000001.pt").read_bytes() == good
    assert ckpt.resolve_resume("auto", tmp_path).name == "ckpt-00000001.pt"
    assert ckpt.load_checkpoint(ckpt.resolve_resume("auto", tmp_path))["step"] == 1


def test_leftover_temp_file_of_a_killed_save_is_ignored_then_cleaned(tmp_path):
    ckpt.save_checkpoint(_state(1), tmp_path, 1)
    (tmp_path / "ckpt-00000002.pt.tmp").write_bytes(b"\x80half a pickle")  # SIGKILL mid-write
    assert ckpt.resolve_resume("auto", tmp_path).name == "ckpt-00000001.pt"
    ckpt.save_checkpoint(_state(3), tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000001.pt", "ckpt-00000003.pt"]


class Payload:
    """Not plain data: weights_only loading must refuse it."""


def test_loading_refuses_code_and_garbage(tmp_path):
    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")


def test_resolve_resume(tmp_path):
    assert ckpt.resolve_resume(None, tmp_path) is None
    assert ckpt.resolve_resume("auto", tmp_path / "missing") is None  # nothing yet: fresh start
    with pytest.raises(FileNotFoundError):
        ckpt.resolve_resume(str(tmp_path / "nope.pt"), tmp_path)
    ckpt.save_checkpoint(_state(5), tmp_path / "checkpoints", 5)
    assert ckpt.resolve_resume(str(tmp_path), tmp_path).name == "ckpt-00000005.pt"  # a run directory


def _draws() -> tuple:
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), np.random.randn()


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in NumPy's state
    ckpt.save_checkpoint({"rng": ckpt.rng_state()}, tmp_path, 1)
    expected = _draws()
    _draws()
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "ckpt-00000001.pt")["rng"])
    assert _draws() == expected


def _corrupt(path) -> None:
    """What a disk error or an interrupted copy leaves: the first half of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_auto_falls_back_past_unreadable_newest_checkpoints_and_says_so(tmp_path, caplog):
    for step in (10, 20, 30):
        ckpt.save_checkpoint(_state(step), tmp_path, step)
    _corrupt(tmp_path / "ckpt-00000030.pt")
    (tmp_path / "ckpt-00000040.pt").write_bytes(b"")  # e.g. a full disk
    with caplog.at_level("WARNING", logger="train.checkpoint"):
        path, state = ckpt.load_resume("auto", tmp_path)
    assert path.name == "ckpt-00000020.pt" and state["model"]["w"][0, 0] == 20
    said = caplog.text
    assert "ckpt-00000040.pt" in said and "ckpt-00000030.pt" in said and "resuming from" in said
    assert ckpt.resolve_resume("auto", tmp_path).name == "ckpt-00000020.pt"  # the loop's current call
    assert ckpt.resolve_resume(str(tmp_path), tmp_path).name == "ckpt-00000020.pt"  # a run directory: the same
    with pytest.raises(ValueError, match="not a readable checkpoint"):  # a file named explicitly: no fallback
        ckpt.load_resume(str(tmp_path / "ckpt-00000030.pt"), tmp_path)


def test_resume_auto_with_no_readable_checkpoint_is_one_line(tmp_path):
    ckpt.save_checkpoint(_state(1), tmp_path, 1)
    _corrupt(tmp_path / "ckpt-00000001.pt")
    with pytest.raises(ValueError) as e:
        ckpt.load_resume("auto", tmp_path)
    assert str(e.value).startswith(f"no readable checkpoint among 1 in {tmp_path}") and "\n" not in str(e.value)
    assert ckpt.load_resume("auto", tmp_path / "empty") is None  # nothing yet: a fresh start
