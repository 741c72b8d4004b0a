"""DINO through the real loop: configs/dino_tiny.yaml shrunk to a 2-block, 32-wide ViT on 4 images
per step (GTSA's views, AdamW with the wd schedule and per-parameter clipping, as gtsa_tiny)."""

from __future__ import annotations

import pytest
import timm
import torch

from tests.train.helpers import (
    PYTHON,
    REPO,
    final_state,
    read_log,
    run_and_kill,
    run_train,
    step_losses,
    trace_teacher_and_forward,
)
from train.config import load_config
from train.loop import train

CONFIG = REPO / "configs" / "dino_tiny.yaml"
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py


def dino_overrides(shards, out, extra: dict | None = None) -> list[str]:
    """configs/dino_tiny.yaml at test size: 2 epochs x 4 steps of 4 images; teacher temperature
    0.04 in epoch 0 and 0.07 from epoch 1 on, the last layer frozen in epoch 0."""
    cfg = {
        "output_dir": str(out),
        "data.shards": str(shards),
        "data.num_local": 2,
        "data.batch_size": 4,
        "data.samples_per_epoch": 16,
        "data.shuffle_buffer": 8,
        "method.options.model_kwargs": "{patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}",
        "method.options.head_hidden_dim": 32,
        "method.options.head_bottleneck_dim": 16,
        "method.options.out_dim": 64,
        "method.options.warmup_teacher_temp_epochs": 2,
        "method.options.freeze_last_layer_epochs": 1,
        "train.epochs": 2,
        "train.threads": 1,
        "checkpoint.every_steps": 3,
        "log.every_steps": 1,
        "log.tensorboard": "false",
        "log.progress": "false",
    }
    cfg.update(extra or {})
    return [f"{k}={v}" for k, v in cfg.items()]


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
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        patch_size=8,
        depth=2,
        embed_dim=32,
        num_heads=2,
        img_size=64,
        num_classes=0,
        dynamic_img_size=True,
    )
    exported = torch.load(result.exported["timm"], weights_only=True)
    vit.load_state_dict(exported, strict=True)
    for k, v in exported.items():
        assert torch.equal(v, state["student.encoder.vit." + k]), k


# 2 epochs x 4 steps, checkpoints every 3 steps: killed after step 7 is logged, the run resumes from
# step 6, mid-epoch 1 (temperature 0.07, last layer trained), with the center, data position and RNGs.
KILL_AFTER_STEP = 4  # DINO's tiny steps are fast: leave the kill a window of four steps, back to ckpt 3


def _cmd(shards, out, resume: bool = False) -> list[str]:
    cmd = [PYTHON, "-m", "train", "--config", str(CONFIG), *dino_overrides(shards, out, {"train.deterministic": "true"})]
    return cmd + (["--resume", "auto"] if resume else [])


def test_dino_tiny_killed_mid_epoch_and_resumed_is_bit_identical(photo_shards, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train(_cmd(photo_shards, straight))
    run_and_kill(_cmd(photo_shards, killed), killed, KILL_AFTER_STEP)
    assert KILL_AFTER_STEP <= max(step_losses(read_log(killed))) < 8
    run_train(_cmd(photo_shards, killed, resume=True))

    records = read_log(killed)
    resumed = [r for r in records if r.get("event") == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] == 3, resumed
    keys = ("loss", "teacher_temp", "teacher_entropy")
    expected = {r["step"]: tuple(r[k] for k in keys) for r in read_log(straight) if "loss" in r}
    assert sorted(expected) == list(range(1, 9))
    got = {r["step"]: tuple(r[k] for k in keys) for r in records if "loss" in r}
    assert got == expected  # every term bit-identical at every step, including the re-run ones

    a, b = final_state(straight), final_state(killed)
    assert a["step"] == b["step"] == 8
    for name, tensor in a["model"].items():  # the center buffer included
        assert torch.equal(tensor, b["model"][name]), name
    for pid, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][key]), (pid, key)
