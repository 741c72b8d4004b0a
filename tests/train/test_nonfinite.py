"""A diverging run never destroys its checkpoints (issue 20, item 1).

Before: with ``optim.base_lr=1e35`` and ``checkpoint.keep_last=1`` the saved checkpoint held 33.6 M
non-finite values, the good checkpoints were deleted, and ``--resume auto`` resumed the NaN
weights. Now a non-finite step is skipped and counted, N in a row stop the run in one line,
non-finite weights are never saved and ``--resume auto`` skips them."""

from __future__ import annotations

import pytest
import torch

from tests.train.helpers import patch_method, read_log, tiny_overrides
from train.checkpoint import list_checkpoints, load_resume, save_checkpoint
from train.config import load_config
from train.loop import train
from train.nonfinite import NonFiniteError, finite_flag, nonfinite_in_state

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py


def _nan_loss_from(monkeypatch, first: int, last: int | None = None) -> None:
    """Forwards number ``first`` .. ``last`` (1-based) return a NaN loss (NaN gradients follow)."""
    from model.registry import METHODS

    build, count = METHODS["clove"], [0]

    def patched(options):
        method = build(options)
        forward = method.forward

        def nan_forward(batch):
            out = forward(batch)
            count[0] += 1
            if count[0] >= first and (last is None or count[0] <= last):
                out["loss"] = out["loss"] * float("nan")
            return out

        method.forward = nan_forward
        return method

    patch_method(monkeypatch, "clove", patched)


def _cfg(shards, out, **extra):
    base = {"train.epochs": 1, "checkpoint.keep_last": 1, "checkpoint.export": False}
    return load_config(None, tiny_overrides(shards, out, {**base, **extra}))


def test_nonfinite_steps_in_a_row_stop_the_run_and_keep_the_good_checkpoint(photo_shards, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _nan_loss_from(monkeypatch, first=3)  # steps 1, 2 fine (checkpoint at 2), then NaN
    with pytest.raises(NonFiniteError) as e:
        train(_cfg(photo_shards, out, **{"train.max_nonfinite_steps": 2}))
    message = str(e.value)
    assert "\n" not in message and message.startswith("step 4:") and "max_nonfinite_steps=2" in message
    assert "ckpt-00000002.pt" in message
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["ckpt-00000002.pt"]
    path, state = load_resume("auto", out / "checkpoints")
    assert path.name == "ckpt-00000002.pt" and nonfinite_in_state(state) is None


def test_a_nonfinite_step_is_skipped_counted_and_reported(photo_shards, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _nan_loss_from(monkeypatch, first=3, last=3)  # one bad step
    result = train(_cfg(photo_shards, out, **{"checkpoint.keep_last": 3}))
    assert result.step == 4 and "1 step(s) skipped" in result.summary
    assert [r["nonfinite_steps"] for r in read_log(out) if "loss" in r] == [0, 0, 1, 1]
    states = {p.name: torch.load(p, weights_only=True) for p in list_checkpoints(out / "checkpoints")}
    assert all(nonfinite_in_state(s) is None for s in states.values())


def test_nonfinite_weights_are_never_saved(photo_shards, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _nan_loss_from(monkeypatch, first=3)
    with pytest.raises(NonFiniteError) as e:  # no per-step check: the NaN reaches the weights
        train(_cfg(photo_shards, out, **{"train.max_nonfinite_steps": 0}))
    assert "\n" not in str(e.value) and "step 4:" in str(e.value) and "not written" in str(e.value)
    found = list_checkpoints(out / "checkpoints")
    assert [p.name for p in found] == ["ckpt-00000002.pt"]  # keep_last=1 did not delete it
    assert nonfinite_in_state(torch.load(found[0], weights_only=True)) is None


def test_resume_auto_skips_a_checkpoint_with_nonfinite_weights(tmp_path):
    good = {"model": {"w": torch.ones(3)}, "optimizer": {"state": {}}, "step": 1}
    save_checkpoint(good, tmp_path, 1, keep_last=5)
    bad = {"model": {"w": torch.tensor([1.0, float("nan"), 1.0])}, "optimizer": {"state": {}}, "step": 2}
    with pytest.raises(NonFiniteError, match="model.w"):
        save_checkpoint(bad, tmp_path, 2, keep_last=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-00000001.pt"]
    torch.save(bad, tmp_path / "ckpt-00000002.pt")  # written by an older version
    path, state = load_resume("auto", tmp_path)
    assert path.name == "ckpt-00000001.pt"
    with pytest.raises(ValueError, match="non-finite"):
        load_resume(str(tmp_path / "ckpt-00000002.pt"), tmp_path)


def test_finite_flag_sees_loss_and_gradients():
    g = [torch.ones(2), torch.ones(3)]
    assert bool(finite_flag(torch.tensor(1.0), g))
    assert not bool(finite_flag(torch.tensor(float("inf")), g))
    assert not bool(finite_flag(torch.tensor(1.0), [torch.ones(2), torch.tensor([float("nan")])]))
    assert not bool(finite_flag(None, [], torch.tensor(float("nan"))))
