"""Gradient accumulation: 2 micro-batches of B make the same optimizer step, and log the same terms,
as one batch of 2B.

The real loop (``train.loop.train``), loader and CLoVE module run; only the method's forward is
replaced by a probe without BatchNorm (whose statistics over B and 2B differ by design): a
per-image loss averaged over the batch, through the student's first convolution. The optimizer
is AdamW with ``betas=(0, 0)`` and a large ``eps``: its step is then ``-lr * g / (|g| + eps)``,
almost linear in the gradient, so a gradient twice too large (a loss not divided by
``grad_accum``) moves the weights twice as far. LARS would hide it: its trust ratio cancels the
gradient's scale.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.registry import METHODS
from model.schedule import scaled_lr
from tests.train.helpers import patch_method, read_log, tiny_overrides
from train.config import load_config
from train.loop import train

BASE_LR, EPS = 8.0, 1.0


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py


def probe_terms(weight: torch.Tensor, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image value ``s`` = mean response of ``weight`` as a strided convolution; the loss is the
    batch mean of ``s^2 + 0.1 s`` (a mean over images, so 2 x B and 2B agree when averaged)."""
    s = F.conv2d(images, weight, stride=weight.shape[-1]).mean(dim=(1, 2, 3))  # [B]
    return {"loss": (s * s + 0.1 * s).mean(), "probe_s": s.mean().detach(), "probe_s2": (s * s).mean().detach()}


class Recorder:
    """Builds the real CLoVE method with the probe as its forward and records every micro-batch."""

    def __init__(self):
        self.keys: list[str] = []
        self.images: list[torch.Tensor] = []
        self.losses: list[float] = []
        self.name: str | None = None
        self.initial: torch.Tensor | None = None
        self.build = METHODS["clove"]

    def __call__(self, options):
        method = self.build(options)
        self.name, weight = next((n, p) for n, p in method.named_parameters() if p.requires_grad and p.ndim == 4)
        self.initial = weight.detach().clone()

        def forward(batch):
            x = batch.views[0].float()
            self.keys += list(batch.keys)
            self.images.append(x.detach().clone())
            out = probe_terms(weight, x)
            self.losses.append(float(out["loss"].detach()))
            return out

        method.forward = forward
        return method


def run(photo_shards, out, monkeypatch, batch_size: int, accum: int) -> tuple[Recorder, dict, dict]:
    recorder = Recorder()
    patch_method(monkeypatch, "clove", recorder)
    extra = {
        "data.batch_size": batch_size,
        "train.grad_accum": accum,
        "train.epochs": 1,
        "train.max_steps": 1,
        "optim.name": "adamw",
        "optim.betas": "[0.0, 0.0]",
        "optim.eps": EPS,
        "optim.weight_decay": 0.0,
        "optim.base_lr": BASE_LR,
        "optim.warmup_epochs": 0,
        "optim.clip_grad_norm": 1.0e9,
        "checkpoint.export": False,
    }
    result = train(load_config(None, tiny_overrides(photo_shards, out, extra)))
    assert result.step == 1
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=True)
    logged = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in logged] == [1]
    monkeypatch.undo()
    return recorder, state["model"], logged[0]


def test_two_micro_batches_of_b_step_and_log_as_one_batch_of_2b(photo_shards, tmp_path, monkeypatch):
    one, one_model, one_log = run(photo_shards, tmp_path / "2B", monkeypatch, batch_size=8, accum=1)
    two, two_model, two_log = run(photo_shards, tmp_path / "2xB", monkeypatch, batch_size=4, accum=2)

    # the premise: the same 8 images, augmented the same way, from the same initial weights
    assert len(one.images) == 1 and len(two.images) == 2
    assert one.keys == two.keys and len(set(one.keys)) > 1
    images = one.images[0]
    assert torch.equal(images, torch.cat(two.images))
    assert torch.equal(one.initial, two.initial)

    # the update, from its definition: AdamW(betas=0) steps by -lr * g / (|g| + eps), g the gradient
    # of the 2B-image loss (computed here, not by the loop)
    w0 = one.initial.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(probe_terms(w0, images)["loss"], w0)
    lr = scaled_lr(BASE_LR, 8, 1, 1)
    assert lr == scaled_lr(BASE_LR, 4, 1, 2)
    expected = one.initial - lr * g / (g.abs() + EPS)
    step = (expected - one.initial).norm()
    assert step > 1e-3 * one.initial.norm()  # large enough that a factor 2 would show
    for model in (one_model, two_model):
        assert (model[one.name] - expected).norm() < 1e-3 * step

    # the logged terms of the step: the mean over its micro-batches (= the 2B value)
    assert one_log["loss"] == pytest.approx(one.losses[0], rel=1e-6)
    assert two_log["loss"] == pytest.approx(sum(two.losses) / 2, rel=1e-6)
    assert two.losses[0] != pytest.approx(two.losses[1], rel=1e-3)  # so "the last one" or "the sum" would differ
    exact = {k: float(v) for k, v in probe_terms(one.initial, images).items()}
    for log in (one_log, two_log):
        for k, v in exact.items():
            assert log[k] == pytest.approx(v, rel=1e-5), k
        assert log["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-4)  # accumulated gradient of the mean
