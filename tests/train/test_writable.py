"""Full disk and read-only outputs end in one line, before the work where possible (issue 20, item 7).

Before: training on a full disk ended in a 35-line "unexpected pos" / ENOSPC traceback, and
``python -m evaluation`` ran the whole evaluation before failing to write ``--out``."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from tests.train.helpers import PYTHON, run_in_repo
from train.checkpoint import list_checkpoints, save_checkpoint
from train.writable import check_output_writable


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_old_one(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path, 1, keep_last=1)
    (tmp_path / "ckpt-00000002.pt.tmp").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(OSError) as e:
        save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path, 2, keep_last=1)
    assert "\n" not in str(e.value) and "disk is full" in str(e.value) and "ckpt-00000002.pt" in str(e.value)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000001.pt"]


def test_torch_save_unexpected_pos_is_one_line(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0\nframe #0: ...\nframe #1")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError) as e:
        save_checkpoint({"model": {}}, tmp_path, 1)
    assert "\n" not in str(e.value) and "disk is full" in str(e.value)
    assert not list(tmp_path.iterdir())


def test_check_output_writable(tmp_path, monkeypatch):
    check_output_writable(tmp_path / "new" / "eval.jsonl")  # parents are created, nothing is left behind
    assert list((tmp_path / "new").iterdir()) == []
    with pytest.raises(ValueError, match="folder"):
        check_output_writable(tmp_path)

    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError) as e:
        check_output_writable(tmp_path / "eval.jsonl")
    assert "\n" not in str(e.value) and "disk is full" in str(e.value)
    assert list(tmp_path.glob(".densessl-write-probe-*")) == []
    monkeypatch.setattr(os, "write", real_write)


def test_read_only_output_dir_stops_training_in_one_line(tmp_path):
    # /proc refuses new folders for every user, root included (chmod does not stop root)
    done = run_in_repo(
        [PYTHON, "-m", "train", "data.samples_per_epoch=128", "output_dir=/proc/densessl-test/run", "log.progress=false"],
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().count("\n") == 0 and "cannot write /proc/densessl-test/run" in done.stderr
