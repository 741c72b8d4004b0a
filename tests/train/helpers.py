"""Helpers for train/ tests: tiny real-photo shards, run overrides, subprocess env, log reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def write_photo_shards(photos: list[Path], out: Path, per_shard: int = 8, count: int = 16) -> Path:
    """Original JPEG bytes of the ``count`` smallest photos, as WebDataset shards (jpg + cls)."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    chosen = sorted(photos, key=lambda p: p.stat().st_size)[:count]
    for s in range(0, len(chosen), per_shard):
        with wds.TarWriter(str(out / f"photos-{s // per_shard:06d}.tar")) as w:
            for i, p in enumerate(chosen[s : s + per_shard]):
                w.write({"__key__": f"img{s + i:05d}", "jpg": p.read_bytes(), "cls": str((s + i) % 4).encode()})
    return out


def tiny_overrides(shards: Path, out: Path, extra: dict | None = None) -> list[str]:
    """A CLoVE ResNet-18 run on 64/32 px views, small enough for a few CPU steps per test."""
    cfg = {
        "output_dir": str(out),
        "data.shards": str(shards),
        "data.global_size": 64,
        "data.local_size": 32,
        "data.num_local": 2,
        "data.batch_size": 4,
        "data.samples_per_epoch": 16,
        "data.num_workers": 1,
        "data.shuffle_buffer": 8,
        "method.name": "clove",
        "method.options.backbone": "resnet18",
        "method.options.proj_hidden": 256,
        "method.options.proj_dim": 64,
        "optim.warmup_epochs": 0.5,
        "optim.base_lr": 4.0,
        "train.epochs": 2,
        "train.threads": 1,
        "checkpoint.every_steps": 2,
        "log.every_steps": 1,
        "log.tensorboard": False,
        "log.progress": False,
    }
    cfg.update(extra or {})

    def yaml_value(v):
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    return [f"{k}={yaml_value(v)}" for k, v in cfg.items()]


def tiny_vit_overrides(shards: Path, out: Path, method_options: dict, extra: dict | None = None) -> list[str]:
    """A ViT preset (gtsa_tiny / dino_tiny) at test size: 2 epochs x 4 steps of 4 images, a
    2-block ViT of width 32 with patch 8, checkpoints every 3 steps; ``method_options`` sizes the
    method's heads, ``extra`` overrides anything."""
    cfg = {
        "output_dir": str(out),
        "data.shards": str(shards),
        "data.num_local": 2,
        "data.batch_size": 4,
        "data.samples_per_epoch": 16,
        "data.shuffle_buffer": 8,
        "method.options.model_kwargs": "{patch_size: 8, depth: 2, embed_dim: 32, num_heads: 2}",
        **{f"method.options.{k}": v for k, v in method_options.items()},
        "train.epochs": 2,
        "train.threads": 1,
        "checkpoint.every_steps": 3,
        "log.every_steps": 1,
        "log.tensorboard": "false",
        "log.progress": "false",
        **(extra or {}),
    }
    return [f"{k}={v}" for k, v in cfg.items()]


def assert_export_is_student_encoder(result, state: dict) -> None:
    """The run's timm export loads strictly into the tiny ViT of :func:`tiny_vit_overrides` and
    equals the checkpoint's student encoder, tensor by tensor."""
    import timm
    import torch

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


def trace_teacher_and_forward(monkeypatch, name: str, teacher: Callable, forward: Callable) -> list[str]:
    """Make ``METHODS[name]`` build methods that note, in the returned list, ``teacher(momentum)``
    at each teacher update and ``forward(method)`` at each forward, before running them."""
    from model.registry import METHODS

    calls: list[str] = []
    build = METHODS[name]

    def traced(options):
        method = build(options)
        update, run_forward = method.update_teacher, method.forward

        def update_teacher(momentum):
            calls.append(teacher(momentum))
            update(momentum)

        def traced_forward(batch):
            calls.append(forward(method))
            return run_forward(batch)

        method.update_teacher, method.forward = update_teacher, traced_forward
        return method

    patch_method(monkeypatch, name, traced)
    return calls


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def read_log(out: Path) -> list[dict]:
    path = Path(out) / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def step_losses(records: list[dict]) -> dict[int, float]:
    """Per-step loss; the last record of a step wins (a resumed run repeats steps after its checkpoint)."""
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def run_in_repo(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``cmd`` run to its end from the repository root with :func:`subprocess_env`, its output captured as text."""
    return subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def run_train(cmd: list[str], timeout: float = 300) -> None:
    """Run a ``python -m train`` command line to its end; fail with its stderr's tail otherwise."""
    done = run_in_repo(cmd, timeout)
    assert done.returncode == 0, done.stderr[-3000:]


def run_and_kill(cmd: list[str], out: Path, after_step: int, timeout: float = 300) -> None:
    """Start a training command and SIGKILL it (and its DataLoader workers, in the same session)
    as soon as ``out``'s log holds the loss of step ``after_step``."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if any(r.get("step", 0) >= after_step and "loss" in r for r in read_log(out)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its DataLoader worker (its own session)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def killed_and_resumed(
    cmd: Callable, tmp_path: Path, kill_after: int, resumed_from: int, keys: tuple[str, ...]
) -> tuple[Path, Path]:
    """Run ``cmd(out, resume)`` straight through, and again killed once step ``kill_after`` is
    logged and resumed with ``--resume auto``; checks that the second run resumed from step
    ``resumed_from`` and logged every key of ``keys`` bit-identically at every step (8 steps).
    Returns both run folders, for the caller's checks of the final states."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train(cmd(straight, False))
    run_and_kill(cmd(killed, False), killed, kill_after)
    assert kill_after <= max(step_losses(read_log(killed))) < 8
    run_train(cmd(killed, True))
    records = read_log(killed)
    resumed = [r for r in records if r.get("event") == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] == resumed_from, resumed
    expected = {r["step"]: tuple(r[k] for k in keys) for r in read_log(straight) if "loss" in r}
    assert sorted(expected) == list(range(1, 9))
    got = {r["step"]: tuple(r[k] for k in keys) for r in records if "loss" in r}
    assert got == expected  # every term bit-identical at every step, including the re-run ones
    return straight, killed


def final_state(out: Path) -> dict:
    """The newest checkpoint of run ``out``, loaded on the CPU."""
    import torch

    ckpts = sorted((out / "checkpoints").glob("ckpt-*.pt"))
    return torch.load(ckpts[-1], map_location="cpu", weights_only=True)


def patch_method(monkeypatch, name: str, build: Callable[[dict], Any]) -> None:
    """Make ``METHODS[name](options)`` return ``build(options)``, the rest of its record unchanged."""
    from dataclasses import replace

    from model.registry import METHODS

    monkeypatch.setitem(METHODS, name, replace(METHODS[name], target=lambda **options: build(options)))
