"""A few steps of the real loop in one process: cpu backend on real photos, CLoVE ResNet-18."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torchvision
import yaml

from model.schedule import scaled_lr, warmup_cosine
from tests.train.helpers import read_log, tiny_overrides, trace_teacher_and_forward
from train.config import config_to_dict, load_config
from train.logging import tensorboard_available
from train.loop import train

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py


def test_few_steps(photo_shards, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, tiny_overrides(photo_shards, out, {"train.epochs": 1, "checkpoint.keep_last": 1}))
    result = train(cfg)
    assert result.step == 4
    report = result.report()  # what python -m train prints at the end: where everything is
    assert report.lstrip().startswith("done: step 4/4") and "loss" in report
    for path in (result.checkpoint, result.config, result.log, result.exported["torchvision"]):
        assert str(path) in report

    records = read_log(out)
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for r in steps:
        assert torch.isfinite(torch.tensor(r["loss"])) and {"positive", "negative", "matches"} <= set(r)
        assert r["images_per_s"] > 0 and 0 <= r["data_wait"] <= 1 and r["bad_samples"] == 0
        assert r["recovered_samples"] == 0  # the loader's count reaches the log (real photos: none damaged)
    # per-iteration schedule: peak = base_lr * 4 images / 256, warm-up 2 steps, cosine over 4 steps
    peak = scaled_lr(4.0, 4, 1, 1)
    expected_lr = [warmup_cosine(s, 4, 2, peak, 0.01 * peak) for s in range(4)]
    assert [r["lr"] for r in steps] == pytest.approx(expected_lr)
    assert [r["event"] for r in records if "event" in r][0] == "start" and records[-1]["event"] == "end"

    # checkpoint: plain data, everything needed to resume, config beside it
    assert [p.name for p in (out / "checkpoints").glob("ckpt-*.pt")] == ["ckpt-00000004.pt"]  # keep_last=1
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scaler", "step", "epoch", "batch_in_epoch", "ranks", "config"} <= set(state)
    assert state["config"] == config_to_dict(cfg) == yaml.safe_load(result.config.read_text())
    assert {"rng", "loader"} <= set(state["ranks"][0]) and state["ranks"][0]["loader"]["batches"] == 4
    assert set(state["ranks"][0]["rng"]) >= {"python", "numpy", "torch"}
    student = {k.removeprefix("student."): v for k, v in state["model"].items() if k.startswith("student.")}
    teacher = {k.removeprefix("teacher."): v for k, v in state["model"].items() if k.startswith("teacher.")}
    moved = [k for k in teacher if k.endswith("weight") and not torch.equal(teacher[k], student[k])]
    assert moved  # the EMA teacher lags the student

    # the exported backbone is the checkpoint's student backbone, loadable by torchvision
    exported = torch.load(result.exported["torchvision"], weights_only=True)
    torchvision.models.resnet18().load_state_dict(exported, strict=True)
    for k, v in exported.items():
        if not k.startswith("fc."):
            assert torch.equal(v, student["backbone." + k]), k


def test_accumulation_updates_the_teacher_once_per_step_before_its_forward(photo_shards, tmp_path, monkeypatch):
    calls = trace_teacher_and_forward(monkeypatch, "clove", lambda momentum: f"teacher {momentum:.6f}", lambda method: "forward")
    out = tmp_path / "run"
    extra = {
        "train.epochs": 1,
        "train.grad_accum": 2,
        "train.mixed_precision": "bf16",
        "optim.clip_grad_norm": 1.0,
        "optim.clip_grad_per_param": 0.5,
        "log.every_steps": 2,
        "log.tensorboard": True,
    }
    cfg = load_config(None, tiny_overrides(photo_shards, out, extra))
    result = train(cfg)
    assert result.step == 2  # 4 batches / 2 micro-batches per step
    # CLoVE's EMA momentum: cosine from 0.99 to 1 over the 2 optimizer steps of the run
    m = [f"teacher {1 - 0.01 * (math.cos(math.pi * s / 2) + 1) / 2:.6f}" for s in (0, 1)]
    assert calls == [m[0], "forward", "forward", m[1], "forward", "forward"]
    logged = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in logged] == [2]
    assert logged[0]["lr"] == pytest.approx(warmup_cosine(1, 2, 1, scaled_lr(4.0, 4, 1, 2), 0.01 * scaled_lr(4.0, 4, 1, 2)))
    assert 0 < logged[0]["grad_norm"] and torch.isfinite(torch.tensor(logged[0]["loss"]))
    assert json.loads(result.log.read_text().splitlines()[-1])["event"] == "end"
    if tensorboard_available():  # Accelerate's tracker wrote the same scalars
        assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
