"""DINO through the real loop: configs/dino_tiny.yaml shrunk to a 2-block, 32-wide ViT on 4 images
per step (GTSA's views, AdamW with the wd schedule and per-parameter clipping, as gtsa_tiny)."""

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

CONFIG = REPO / "configs" / "dino_tiny.yaml"
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py


def dino_overrides(shards, out, extra: dict | None = None) -> list[str]:
    """configs/dino_tiny.yaml at test size: 2 epochs x 4 steps of 4 images; teacher temperature
    0.04 in epoch 0 and 0.07 from epoch 1 on, the last layer frozen in epoch 0."""
    options = {
        "head_hidden_dim": 32,
        "head_bottleneck_dim": 16,
        "out_dim": 64,
        "warmup_teacher_temp_epochs": 2,
        "freeze_last_layer_epochs": 1,
    }
    return tiny_vit_overrides(shards, out, options, extra)


def test_dino_trains_updates_the_teacher_once_per_step_and_exports_into_timm(photo_shards, tmp_path, monkeypatch):
    calls = trace_teacher_and_forward(
        monkeypatch, "dino", lambda momentum: "teacher", lambda m: f"forward {m.teacher_temp:.2f} {m.last_layer_frozen}"
    )
    out = tmp_path / "run"
    cfg = load_config(CONFIG, dino_overrides(photo_shards, out, {"train.grad_accum": 2, "checkpoint.every_steps": 4}))
    result = train(cfg)
    assert result.step == 4  # 2 epochs x 4 batches / 2 micro-batches per step
    step = ["teacher", "forward 0.04 True", "forward 0.04 True"]  # one teacher update, two micro-batches
    assert calls == step * 2 + [c.replace("0.04 True", "0.07 False") for c in step] * 2
    logged = {r["step"]: r for r in read_log(out) if "loss" in r}
    assert sorted(logged) == [1, 2, 3, 4]
    for step, r in logged.items():
        assert r["teacher_temp"] == pytest.approx(0.04 if step <= 2 else 0.07)
        assert torch.isfinite(torch.tensor(r["loss"])) and 0.0 <= r["teacher_entropy"] <= torch.log(torch.tensor(64.0))
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)["model"]
    assert state["center"].shape == (1, 64) and state["center"].abs().sum() > 0  # the running mean moved
    for net in ("student", "teacher"):
        g = state[f"{net}.head.last_layer.parametrizations.weight.original0"]
        assert torch.equal(g, torch.ones_like(g))
    # the export loads strictly into timm and is the checkpoint's student encoder
    assert_export_is_student_encoder(result, state)


# 2 epochs x 4 steps, checkpoints every 3 steps: killed after step 4 is logged (DINO's tiny steps
# are fast: the kill gets a window of four steps), the run resumes from step 3, mid-epoch 0, with
# the center, data position and RNGs, and goes on into epoch 1 (temperature 0.07, last layer trained).
KILL_AFTER_STEP = 4


def _cmd(shards, out, resume: bool = False) -> list[str]:
    cmd = [PYTHON, "-m", "train", "--config", str(CONFIG), *dino_overrides(shards, out, {"train.deterministic": "true"})]
    return cmd + (["--resume", "auto"] if resume else [])


def test_dino_tiny_killed_mid_epoch_and_resumed_is_bit_identical(photo_shards, tmp_path):
    def cmd(out, resume):
        return _cmd(photo_shards, out, resume)

    straight, killed = killed_and_resumed(cmd, tmp_path, KILL_AFTER_STEP, 3, ("loss", "teacher_temp", "teacher_entropy"))
    a, b = final_state(straight), final_state(killed)
    assert a["step"] == b["step"] == 8
    for name, tensor in a["model"].items():  # the center buffer included
        assert torch.equal(tensor, b["model"][name]), name
    for pid, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][key]), (pid, key)
