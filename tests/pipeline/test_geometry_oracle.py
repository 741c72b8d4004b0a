"""The cpu backend's own paths under the geometry oracle: exact crops, upsampling and its
reduced-scale JPEG decoding, with recipes no config names (every backend's oracle through
``build_loader`` is tests/pipeline/test_oracle_every_backend.py).

Every pixel of the input stores its own position: red = column j, green = row i of a 256 x 192
image (one level per pixel, exact integers; pixel j's centre is x = j + 0.5). The view read back at
pixel centre ``(c + 0.5, r + 0.5)`` must therefore equal ``A_v^-1 (c + 0.5, r + 0.5)`` with
``A_v`` the batch's matrix, up to the error of resampling the ramp, and nothing else:

* crop without resize (+ flip / quarter turns): no interpolation, so exact;
* resized views: bilinear, bicubic and their antialiased versions reproduce a linear function
  exactly (symmetric, unit-sum kernels), so the error is the uint8 rounding of the output
  (0.5 level = 0.5 px) plus the error of the input pixels themselves (0 for PNG; for JPEG the
  round-trip error of the decoded ramp, measured here with PIL's own scaled decoder against the
  ideal ramp) amplified by at most sum|w| of the kernel (1 bilinear, 1.25 Keys bicubic), plus
  0.05 level for the fixed-point weights of torch's uint8 kernels.
  Within the kernel's reach of the crop edge (1 view pixel bilinear, 2 bicubic, times the zoom
  when upsampling) the kernel is cut by the crop and renormalised, so a ramp is not reproduced
  there: that ring is left out.

Sizes are multiples of 8 so that JPEG blocks tile the image (a partial edge block is padded by
the encoder and its reduced-scale pixels average pixels outside the image).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pipeline.backends.cpu_backend import build_cpu_loader
from pipeline.config import plain_config
from pipeline.views import Recipe, ViewSpec, named_recipe

W, H = 256, 192
AREA = W * H
N_IMAGES = 12
KERNEL_RADIUS = {"bilinear": 1, "bicubic": 2}
KERNEL_ABS_SUM = {"bilinear": 1.0, "bicubic": 1.25}  # max sum |w| (Keys a=-0.5 at t=0.5: 1.25)
FIXED_POINT = 0.05


def _ramp() -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = np.arange(W)[None, :]
    img[..., 1] = np.arange(H)[:, None]
    img[..., 2] = 128
    return img


def _encode(fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        Image.fromarray(_ramp()).save(buf, "JPEG", quality=100, subsampling=0)
    else:
        Image.fromarray(_ramp()).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_input_error(data: bytes, num: int) -> float:
    """Max error (levels = px) of the ramp decoded at num/8 by PIL, against the ideal ramp: decoded
    pixel k covers original [8k/num, 8(k+1)/num), so its value should be its centre minus 0.5."""
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (W * num // 8, H * num // 8))
    dec = np.asarray(im.convert("RGB")).astype(np.float64)
    assert dec.shape == (H * num // 8, W * num // 8, 3)
    ideal_x = (np.arange(dec.shape[1]) + 0.5) * 8 / num - 0.5
    ideal_y = (np.arange(dec.shape[0]) + 0.5) * 8 / num - 0.5
    return max(np.abs(dec[..., 0] - ideal_x[None]).max(), np.abs(dec[..., 1] - ideal_y[:, None]).max())


def _run(tmp_path, fmt: str, recipe: Recipe, *, reduced_decode: bool = True):
    data = _encode(fmt)
    path = tmp_path / f"oracle-{fmt}-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(N_IMAGES):
            sink.write({"__key__": f"ramp{i:03d}", fmt: data})
    cfg = plain_config(str(path), batch_size=N_IMAGES, shuffle_buffer=0, reduced_decode=reduced_decode)
    loader = build_cpu_loader(cfg, recipe=recipe)
    batches = list(loader)
    assert len(batches) == 1 and batches[0].batch_size == N_IMAGES
    return batches[0], loader.stats


def _check(batch, recipe: Recipe, input_error: float, exact: bool = False) -> dict:
    """Compare every (interior) view pixel with A_v^-1 of its centre; returns coverage counters."""
    seen = {"pixels": 0, "flips": 0, "turns": set()}
    for v, spec in enumerate(recipe.views):
        views = batch.views[v].double()
        size = spec.size
        cc, rr = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
        for b in range(batch.batch_size):
            a = batch.matrices[b, v].double().numpy()
            inv = np.linalg.inv(a)
            x = inv[0, 0] * cc + inv[0, 1] * rr + inv[0, 2]
            y = inv[1, 0] * cc + inv[1, 1] * rr + inv[1, 2]
            err = np.maximum(np.abs(views[b, 0].numpy() + 0.5 - x), np.abs(views[b, 1].numpy() + 0.5 - y))
            if exact:
                tol, ring = 1e-3, 0
            else:
                zoom = np.abs(a[:2, :2]).max()  # view px per original px (> 1: upsampling)
                ring = math.ceil(KERNEL_RADIUS[spec.interpolation] * max(1.0, zoom))
                tol = KERNEL_ABS_SUM[spec.interpolation] * input_error + 0.5 + FIXED_POINT
            inner = err[ring : size - ring, ring : size - ring]
            assert inner.size > 0
            assert inner.max() <= tol, f"view {v} sample {b}: error {inner.max():.3f} px > {tol:.3f}"
            seen["pixels"] += inner.size
            seen["flips"] += int(np.linalg.det(a[:2, :2]) < 0)
            seen["turns"].add(int(batch.rotation[b, v]))
    return seen


def test_exact_crops_flips_and_quarter_turns(tmp_path):
    """Crops of exactly the view size (scale = S^2 / area, square ratio): no resampling at all."""
    size = 64
    scale = (size * size / AREA,) * 2
    spec = ViewSpec(size, scale, ratio=(1.0, 1.0), flip_p=0.5, rotate=True, photometric=None)
    recipe = Recipe("exact", (spec, spec, spec))
    batch, stats = _run(tmp_path, "png", recipe)
    seen = _check(batch, recipe, 0.0, exact=True)
    assert seen["flips"] > 0 and seen["turns"] == {0, 1, 2, 3}
    assert stats["bad_samples"] == 0


@pytest.mark.parametrize(
    "recipe",
    [named_recipe("gtsa", 24, 8, num_local=2), named_recipe("clove", 24, 8, num_local=2)],
    ids=["gtsa-bilinear-turns", "clove-bicubic-flips"],
)
def test_resized_views_png(tmp_path, recipe):
    batch, _ = _run(tmp_path, "png", recipe.without_photometric())
    seen = _check(batch, recipe, 0.0)
    assert seen["pixels"] > 1000
    if recipe.name == "gtsa":
        assert seen["turns"] == {0, 1, 2, 3}
    else:
        assert seen["flips"] > 0


def test_upsampled_views_png(tmp_path):
    spec = ViewSpec(64, (0.01, 0.04), flip_p=0.5, rotate=True, interpolation="bilinear", photometric=None)
    batch, _ = _run(tmp_path, "png", Recipe("up", (spec, spec)))
    assert (batch.matrices[:, :, :2, :2].abs().amax(dim=(-1, -2)) > 1).all()  # really upsampled
    _check(batch, Recipe("up", (spec, spec)), 0.0)


def _band(size: int, scale: tuple[float, float], interpolation: str) -> Recipe:
    """Two views whose crops all fall in one decode-scale band (sides checked by the stats)."""
    a = ViewSpec(size, scale, flip_p=0.5, interpolation=interpolation, photometric=None)
    b = ViewSpec(size, scale, flip_p=0.0, rotate=True, interpolation=interpolation, photometric=None)
    return Recipe(f"band{size}", (a, b))


@pytest.mark.parametrize(
    "num, size, scale, interpolation",
    [
        # crop sides in [74, 181]: >= 64 = 8 * 8, so 1/8 suffices for 8 px views
        (1, 8, (0.15, 0.5), "bicubic"),
        # crop sides in [105, 171]: >= 96 but < 192 for 24 px views -> 1/4
        (2, 24, (0.3, 0.45), "bilinear"),
        # crop sides in [50, 89]: >= 48 but < 96 for 24 px views -> 1/2
        (4, 24, (0.07, 0.12), "bicubic"),
        # crop sides in [19, 44] < 48 for 24 px views -> full decode (and upsampling)
        (8, 24, (0.01, 0.03), "bilinear"),
    ],
)
def test_reduced_scale_jpeg_decoding(tmp_path, num, size, scale, interpolation):
    recipe = _band(size, scale, interpolation)
    batch, stats = _run(tmp_path, "jpg", recipe)
    assert stats[f"decode_{num}/8"] == N_IMAGES, stats
    input_error = _jpeg_input_error(_encode("jpg"), num)
    assert input_error <= 3.0  # the input itself is a faithful ramp (quality 100, 4:4:4)
    seen = _check(batch, recipe, input_error)
    assert seen["flips"] > 0 and len(seen["turns"]) > 1


def test_full_decode_when_reduced_decoding_is_off(tmp_path):
    recipe = _band(8, (0.15, 0.5), "bilinear")
    batch, stats = _run(tmp_path, "jpg", recipe, reduced_decode=False)
    assert stats["decode_8/8"] == N_IMAGES
    _check(batch, recipe, _jpeg_input_error(_encode("jpg"), 8))
