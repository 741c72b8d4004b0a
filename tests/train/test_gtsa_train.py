"""GTSA through the real loop: configs/gtsa_tiny.yaml shrunk to a 2-block, 32-wide ViT on 4 images
per step. The cpu backend on real photos, AdamW with the wd schedule and per-parameter clipping."""

from __future__ import annotations

import pytest
import torch

from tests.train.helpers import (
    PYTHON,
    REPO,
    assert_export_is_student_encoder,
    final_state,
    killed_and_resumed,
    read_log,
    tiny_vit_overrides,
    trace_teacher_and_forward,
)
from train.config import load_config
from train.loop import train

CONFIG = REPO / "configs" / "gtsa_tiny.yaml"
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py


def gtsa_overrides(shards, out, extra: dict | None = None) -> list[str]:
    """configs/gtsa_tiny.yaml at test size: 2 epochs x 4 steps of 4 images, pc from epoch 1 on."""
    options = {"proj_dim": 32, "pred_hidden": 32, "rot_hidden": 32, "rot_bottleneck": 16, "pc_warmup_epochs": 1}
    return tiny_vit_overrides(shards, out, options, extra)


def test_gtsa_trains_updates_the_teacher_once_per_step_and_exports_into_timm(photo_shards, tmp_path, monkeypatch):
    calls = trace_teacher_and_forward(
        monkeypatch, "gtsa", lambda momentum: "teacher", lambda method: f"forward {method.pc_active}"
    )
    out = tmp_path / "run"
    cfg = load_config(CONFIG, gtsa_overrides(photo_shards, out, {"train.grad_accum": 2, "checkpoint.every_steps": 4}))
    result = train(cfg)
    assert result.step == 4  # 2 epochs x 4 batches / 2 micro-batches per step
    step = ["teacher", "forward False", "forward False"]
    assert calls == step * 2 + [c.replace("False", "True") for c in step] * 2  # pc from epoch 1 on
    logged = [r for r in read_log(out) if "loss" in r]
    for r in logged:
        assert {"aligned", "pc", "rot", "rot_acc"} <= set(r) and all(
            torch.isfinite(torch.tensor(r[k])) for k in ("loss", "aligned", "pc", "rot")
        )
        assert -1.0 <= r["aligned"] <= 1.0 and -1.0 <= r["pc"] <= 1.0
    # the export loads strictly into timm and is the checkpoint's student encoder
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["model"]
    assert_export_is_student_encoder(result, state)


# 2 epochs x 4 steps, checkpoints every 3 steps: killed after step 7 is logged, the run resumes from
# step 6, mid-epoch 1 (where pc counts), with the data position and every RNG restored.
KILL_AFTER_STEP = 7


def _cmd(shards, out, resume: bool = False) -> list[str]:
    cmd = [PYTHON, "-m", "train", "--config", str(CONFIG), *gtsa_overrides(shards, out, {"train.deterministic": "true"})]
    return cmd + (["--resume", "auto"] if resume else [])


def test_gtsa_tiny_killed_mid_epoch_and_resumed_is_bit_identical(photo_shards, tmp_path):
    # drop-path draws from the global torch RNG every step: the resumed run repeats it only if the
    # checkpoint restores that RNG exactly where the first run was
    def cmd(out, resume):
        return _cmd(photo_shards, out, resume)

    straight, killed = killed_and_resumed(cmd, tmp_path, KILL_AFTER_STEP, 6, ("loss", "aligned", "pc", "rot"))
    a, b = final_state(straight), final_state(killed)
    assert a["step"] == b["step"] == 8
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for pid, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][key]), (pid, key)
