"""Batched photometric ops against torchvision's per-image functional ops (the reference).

Images are float in [0, 255] for pipeline.backends.photometric_gpu and in [0, 1] for torchvision.
"""

from __future__ import annotations

import random

import pytest
import torch
import torchvision.transforms.functional as TF

from pipeline.backends.photometric_gpu import (
    PhotometricArrays,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment,
    gaussian_blur,
    grayscale,
    solarize,
)
from pipeline.photometric import draw_photometric
from pipeline.views import Photometric

TOL = 2e-5  # on the [0, 1] scale: float32 rounding only


@pytest.fixture
def batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(5, 3, 20, 24, generator=g) * 255


def tv(x: torch.Tensor) -> torch.Tensor:
    return x / 255.0


@pytest.mark.parametrize(
    "ours, ref",
    [(adjust_brightness, TF.adjust_brightness), (adjust_contrast, TF.adjust_contrast), (adjust_saturation, TF.adjust_saturation)],
)
def test_blend_ops_match_torchvision_per_sample(batch, ours, ref):
    factors = torch.tensor([0.0, 0.6, 1.0, 1.3, 1.8])
    out = ours(batch.clone(), factors)
    for i, f in enumerate(factors.tolist()):
        assert torch.allclose(tv(out[i]), ref(tv(batch[i]), f), atol=TOL)


def test_hue_matches_torchvision_per_sample(batch):
    shifts = torch.tensor([-0.5, -0.1, 0.0, 0.07, 0.49])
    out = adjust_hue(batch.clone(), shifts)
    for i, h in enumerate(shifts.tolist()):
        assert torch.allclose(tv(out[i]), TF.adjust_hue(tv(batch[i]), h), atol=TOL)


def test_hue_keeps_grey_pixels_and_saturated_primaries_rotate():
    x = torch.zeros(2, 3, 1, 2)
    x[0, :, 0, 0] = 128.0  # grey: no hue
    x[0, :, 0, 1] = torch.tensor([255.0, 0.0, 0.0])  # red -> +1/3 turn -> green
    x[1] = x[0]
    out = adjust_hue(x.clone(), torch.tensor([1 / 3, 0.0]))
    assert torch.allclose(out[0, :, 0, 0], torch.full((3,), 128.0))
    assert torch.allclose(out[0, :, 0, 1], torch.tensor([0.0, 255.0, 0.0]), atol=1e-3)
    assert torch.allclose(out[1], x[1], atol=1e-3)


def test_grayscale_blur_solarize_match_torchvision(batch):
    gray = grayscale(batch).expand(-1, 3, -1, -1)
    for i in range(len(batch)):
        assert torch.allclose(tv(gray[i]), TF.rgb_to_grayscale(tv(batch[i]), 3), atol=TOL)
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.7, 2.0])
    blurred = gaussian_blur(batch.clone(), sigmas, radius=6)
    for i, s in enumerate(sigmas.tolist()):
        assert torch.allclose(blurred[i], TF.gaussian_blur(batch[i], [13, 13], [s, s]), atol=1e-3)
    sol = solarize(batch)
    for i in range(len(batch)):
        assert torch.allclose(tv(sol[i]), TF.solarize(tv(batch[i]), 128.0 / 255.0), atol=TOL)


def reference_chain(img: torch.Tensor, p: PhotometricArrays, i: int, radius: int) -> torch.Tensor:
    """One sample, torchvision ops in the drawn order (the definition, written out)."""
    x = tv(img)
    if p.jitter[i]:
        for op in p.order[i].tolist():
            f = float(p.factors[i, op]) if op >= 0 else None
            if op == 0:
                x = TF.adjust_brightness(x, f)
            elif op == 1:
                x = TF.adjust_contrast(x, f)
            elif op == 2:
                x = TF.adjust_saturation(x, f)
            elif op == 3:
                x = TF.adjust_hue(x, f)
    if p.gray[i]:
        x = TF.rgb_to_grayscale(x, 3)
    if p.blur_sigma[i] > 0:
        s = float(p.blur_sigma[i])
        x = TF.gaussian_blur(x, [2 * radius + 1] * 2, [s, s])
    if p.solarize[i]:
        x = TF.solarize(x, 128.0 / 255.0)
    return x * 255.0


def test_batched_chain_with_shared_law_matches_per_sample_reference():
    # Parameters drawn by the shared law (pipeline.photometric), strong probabilities so
    # that every op and many orders occur; each sample checked against the chain written out.
    rng = random.Random(0)
    spec = Photometric((0.4, 0.4, 0.2, 0.1), jitter_p=0.8, gray_p=0.3, blur_p=0.5, solarize_p=0.3)
    params = [draw_photometric(spec, rng) for _ in range(24)]
    p = PhotometricArrays.from_params(params)
    assert p.jitter.any() and (~p.jitter).any() and p.gray.any() and p.solarize.any()
    assert (p.blur_sigma > 0).any() and len({tuple(o) for o in p.order.tolist()}) > 3
    g = torch.Generator().manual_seed(1)
    x = torch.rand(24, 3, 16, 16, generator=g) * 255
    out = augment(x.clone(), p, blur_radius=6)
    for i in range(24):
        ref = reference_chain(x[i], p, i, radius=6)
        # solarize is a threshold: a pixel within float error of 128 may flip; allow a few
        bad = (out[i] - ref).abs() > 2e-2
        assert bad.float().mean() < 0.01, f"sample {i}: {int(bad.sum())} pixels differ"


def test_identity_parameters_leave_images_unchanged(batch):
    out = augment(batch.clone(), PhotometricArrays.identity(len(batch)))
    assert torch.equal(out, batch)


def test_from_params_packs_the_drawn_values():
    rng = random.Random(3)
    spec = Photometric((0.4, 0.4, 0.0, 0.1), jitter_p=1.0, gray_p=0.0, blur_p=1.0, solarize_p=0.0)
    params = [draw_photometric(spec, rng) for _ in range(4)]
    p = PhotometricArrays.from_params(params)
    for i, q in enumerate(params):
        assert p.order[i, : len(q.jitter_order)].tolist() == list(q.jitter_order)
        assert 2 not in p.order[i].tolist()  # saturation strength 0: never applied
        assert p.factors[i].tolist() == pytest.approx([q.brightness, q.contrast, q.saturation, q.hue])
        assert float(p.blur_sigma[i]) == pytest.approx(q.blur_sigma)


def test_the_kornia_comparison_skips_in_one_line_without_kornia(monkeypatch, capsys):
    """Kornia is an optional extra: ``python -m pipeline.bench_photometric torch`` still times the fused ops."""
    import sys

    from pipeline.bench_photometric import main

    monkeypatch.setitem(sys.modules, "kornia", None)  # import kornia -> ImportError
    monkeypatch.setitem(sys.modules, "kornia.augmentation", None)
    main(["torch", "--batch", "2", "--size", "16", "--repeats", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "fused full chain" in lines[-2]
    assert lines[-1].strip().startswith("kornia not installed") and "densessl[kornia]" in lines[-1]
