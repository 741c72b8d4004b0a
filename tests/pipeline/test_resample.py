"""Batched resampling against the geometry contract, with coordinate-encoded images.

Each test image stores, at every pixel, the original-image coordinates of that pixel's centre
(channel 0 = x, channel 1 = y). Rendering a view and reading it back must give, at every view
pixel centre c, the point A_v^-1 c computed here from the matrices alone. Nothing of
pipeline.backends.resample is trusted: the expected values come from a direct inverse of each matrix.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.backends.resample import build_atlas, render_views, scale_matrices
from pipeline.views import Recipe, ViewSpec, sample_views

BICUBIC_LINEAR_ERR = 0.06  # cubic convolution (a = -0.75) reproduces a ramp only to 0.0481 px,
# plus the small bias of an antialiased pre-shrink by a non-integer factor


def coord_image(width: int, height: int, scale: float = 1.0) -> torch.Tensor:
    """``[2, h, w]`` float64->float32 image of an original ``width x height`` decoded at ``scale``:
    decoded pixel (i, j) stores the original coordinates of its centre, ((j + .5)/s, (i + .5)/s)."""
    h, w = math.ceil(height * scale), math.ceil(width * scale)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([(xs + 0.5) / scale, (ys + 0.5) / scale]).float()


def expected(matrices: np.ndarray, size: int) -> np.ndarray:
    """``[V, 3, 3]`` -> ``[V, 2, S, S]`` original coordinates of every view pixel centre (numpy)."""
    c = np.arange(size) + 0.5
    u, v = np.meshgrid(c, c)  # u: column (x), v: row (y)
    pts = np.stack([u.ravel(), v.ravel(), np.ones(size * size)])
    out = np.linalg.inv(matrices) @ pts  # [V, 3, S*S]
    return out[:, :2].reshape(len(matrices), 2, size, size)


def check_views(sizes, recipe, scales=None, seed=0, interpolation="bilinear", device="cpu"):
    """Render every view of ``recipe`` for images of ``sizes``; return per-view errors and info."""
    rng = random.Random(seed)
    scales = scales or [1.0] * len(sizes)
    params = [sample_views(w, h, recipe, rng) for w, h in sizes]
    mats = torch.tensor(np.stack([p.matrices for p in params]), dtype=torch.float32)
    images = [coord_image(w, h, s).to(device) for (w, h), s in zip(sizes, scales)]
    to_dec = scale_matrices(torch.tensor([[s, s] for s in scales]))
    atlas = build_atlas(images, mats, to_dec)
    size = recipe.views[0].size
    out = render_views(atlas, mats, size, interpolation).double().cpu().numpy()  # [B, V, 2, S, S]
    want = np.stack([expected(p.matrices, size) for p in params])
    levels = atlas.level_of(mats)
    return out, want, params, levels, atlas


def tolerance_map(want, sizes, levels, atlas, interpolation):
    """Per-pixel bound: tight inside the image, looser within a few source pixels of its border
    (where the coverage-normalised filters see one side only). Units: original pixels."""
    b, v = want.shape[:2]
    tol = np.zeros(want.shape[:2] + want.shape[3:])
    for i in range(b):
        w, h = sizes[i]
        src_px = 1.0 / base_scale(atlas, i)  # original px per canvas px
        for k in range(v):
            px = src_px * 2 ** int(levels[i, k])  # original pixels per pixel of the level read
            x, y = want[i, k, 0], want[i, k, 1]
            edge = np.minimum.reduce([x, y, w - x, h - y])
            # bilinear is exact on a ramp; 1/100 px covers float32 and the pre-shrink's bias
            inner = BICUBIC_LINEAR_ERR * px if interpolation == "bicubic" else 0.01 * px
            tol[i, k] = np.where(edge > 3 * px, inner, 1.6 * px)
    return tol


def base_scale(atlas, i: int) -> float:
    """Smaller axis scale of image i's original -> canvas map (a scaled permutation: portrait
    images are stored transposed)."""
    return float(atlas.base[i, :2, :2].abs().sum(dim=0).min())


def spec(size, scale=(0.2, 1.0), **kw) -> ViewSpec:
    return ViewSpec(size, scale, photometric=None, **kw)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize(
    "views",
    [
        pytest.param((spec(24, flip_p=0.0), spec(24, flip_p=0.0)), id="crops"),
        pytest.param((spec(24, flip_p=1.0), spec(24, flip_p=1.0)), id="flips"),
        pytest.param((spec(24, rotate=True), spec(24, rotate=True), spec(24, rotate=True)), id="turns"),
        pytest.param((spec(8, scale=(0.5, 1.0)), spec(8, (0.05, 0.3), flip_p=1.0)), id="strong-downscale"),
    ],
)
def test_views_match_inverse_matrices(views, interpolation):
    sizes = [(97, 64), (60, 80), (200, 150), (33, 41)]
    recipe = Recipe("t", tuple(replace_interp(v, interpolation) for v in views))
    out, want, params, levels, atlas = check_views(sizes, recipe, interpolation=interpolation)
    tol = tolerance_map(want, sizes, levels, atlas, interpolation)
    err = np.abs(out - want).max(axis=2)  # worst of x and y per pixel
    assert np.all(err <= tol), f"worst excess {np.max(err - tol):.4f} px"
    if views[0].size == 8:  # strong downscale must really read 8x-reduced pixels (pre-shrink x level)
        reduction = 2.0 ** levels.double() / torch.tensor([[base_scale(atlas, i)] for i in range(len(sizes))])
        assert float(reduction.max()) >= 8.0 and atlas.max_level >= 1


def replace_interp(v: ViewSpec, interpolation: str) -> ViewSpec:
    from dataclasses import replace

    return replace(v, interpolation=interpolation)


def test_reduced_decode_scale_and_preshrink_fold_into_the_map():
    # Images decoded at 1/2 and 1/4 (reduced DCT), and a large one whose views all shrink >= 2x
    # so that it is pre-shrunk on its own: all must still land on A_v^-1 c.
    recipe = Recipe("t", (spec(24, scale=(0.3, 1.0)), spec(24, scale=(0.3, 1.0), flip_p=1.0)))
    sizes = [(64, 48), (256, 200), (640, 480)]
    out, want, params, levels, atlas = check_views(sizes, recipe, scales=[0.5, 0.25, 1.0])
    assert base_scale(atlas, 2) < 1.0, "the 640x480 image should have been pre-shrunk"
    assert base_scale(atlas, 0) == pytest.approx(0.5)
    tol = tolerance_map(want, sizes, levels, atlas, "bilinear")
    err = np.abs(out - want).max(axis=2)
    assert np.all(err <= tol), f"worst excess {np.max(err - tol):.4f} px"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_views_match_inverse_matrices_on_cuda(interpolation):
    sizes = [(97, 64), (640, 480), (200, 150)]
    views = (spec(24, rotate=True), spec(24, flip_p=1.0), spec(8, (0.05, 0.3)))
    for group in (views[:2], views[2:]):
        recipe = Recipe("t", tuple(replace_interp(v, interpolation) for v in group))
        out, want, params, levels, atlas = check_views(
            sizes, recipe, scales=[1.0, 0.5, 1.0], interpolation=interpolation, device="cuda"
        )
        tol = tolerance_map(want, sizes, levels, atlas, interpolation)
        err = np.abs(out - want).max(axis=2)
        assert np.all(err <= tol), f"worst excess {np.max(err - tol):.4f} px"


def test_one_grid_sample_call_per_view_size(monkeypatch):
    calls = []
    real = F.grid_sample
    monkeypatch.setattr(torch.nn.functional, "grid_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = random.Random(1)
    recipe = Recipe("t", (spec(16), spec(16), spec(8, (0.05, 0.3)), spec(8, (0.05, 0.3)), spec(8, (0.05, 0.3))))
    sizes = [(300, 200), (64, 64), (120, 250)]
    mats = torch.tensor(np.stack([sample_views(w, h, recipe, rng).matrices for w, h in sizes]), dtype=torch.float32)
    atlas = build_atlas([torch.zeros(3, h, w, dtype=torch.uint8) for w, h in sizes], mats)
    assert atlas.max_level >= 1
    render_views(atlas, mats[:, :2], 16)
    render_views(atlas, mats[:, 2:], 8)
    assert len(calls) == 2


def test_antialiasing_removes_aliasing_of_fine_texture():
    # A 1-pixel checkerboard shrunk 8.5x must come out flat grey; point sampling would return
    # black/white noise. Without antialiasing (the switch) it does alias.
    ys, xs = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    board = (((xs + ys) % 2) * 255).to(torch.uint8).expand(3, -1, -1)
    rng = random.Random(0)
    recipe = Recipe("t", (spec(30, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0),))  # 8.53x
    mats = torch.tensor(sample_views(256, 256, recipe, rng).matrices[None], dtype=torch.float32)
    good = render_views(build_atlas([board], mats), mats, 30, "bilinear")[0, 0]
    bad = render_views(build_atlas([board], mats, antialias=False), mats, 30, "bilinear")[0, 0]
    assert (good - 127.5).abs().max() < 3.0
    assert (bad - 127.5).abs().max() > 50.0


def test_matches_torchvision_resized_crop_on_a_real_photo(real_jpegs):
    # Independent reference: torchvision's per-crop antialiased resize of the same window.
    import torchvision.transforms.v2.functional as TF
    from PIL import Image

    photo = Image.open(real_jpegs[0])
    photo.draft("RGB", (320, 240))  # reduced JPEG decode keeps the test fast
    img = torch.from_numpy(np.array(photo.convert("RGB"))).permute(2, 0, 1)
    img = TF.resize(img, [240], antialias=True)
    h, w = img.shape[-2:]
    rng = random.Random(3)
    recipe = Recipe("t", tuple(spec(48, scale=(0.2, 1.0), flip_p=0.0, interpolation="bicubic") for _ in range(6)))
    p = sample_views(w, h, recipe, rng)
    mats = torch.tensor(p.matrices[None], dtype=torch.float32)
    out = render_views(build_atlas([img], mats), mats, 48, "bicubic").round().clamp(0, 255).to(torch.uint8)[0]
    for k, (x0, y0, cw, ch) in enumerate(p.windows.astype(int)):
        ref = TF.resized_crop(img.float(), y0, x0, ch, cw, [48, 48], TF.InterpolationMode.BICUBIC, antialias=True)
        mse = ((out[k].float() - ref.clamp(0, 255).round()) ** 2).mean()
        assert 10 * math.log10(255**2 / max(float(mse), 1e-6)) > 28.0


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        build_atlas([torch.zeros(3, 8, 8)], torch.eye(3).repeat(2, 1, 1, 1))
    atlas = build_atlas([torch.zeros(3, 8, 8)], torch.eye(3)[None, None])
    with pytest.raises(ValueError):
        render_views(atlas, torch.eye(3)[None, None], 4, "nearest-ish")
