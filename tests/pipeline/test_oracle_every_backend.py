"""The one geometry oracle every registered backend passes, through ``build_loader`` as training
builds it: coordinate-encoded PNGs (red = column, green = row, one level per pixel) go through the
clove (bicubic, flips) and gtsa (bilinear, quarter turns) recipes with photometrics off, and every
view pixel must read back the position ``A_v^-1`` gives its centre.

Tolerance: 0.5 level for the uint8 rounding of the view, plus 0.25 for the backends' kernels, which
all reproduce a ramp to within 0.19 px away from the crop edge (torch's bicubic is the least
exact: 0.688 in all, measured). Within the kernel's reach of the crop edge (1 view pixel bilinear,
2 bicubic, times the zoom when upsampling) the crop cuts the kernel, so that ring is left out. A
view shifted by half a pixel or flipped the wrong way fails (the last test), so the oracle has
teeth. Backend-specific paths (the cpu backend's reduced-scale JPEG decoding, DALI's own sampler
and ROI decoder, the torch device step's decode-scale folding) keep their own tests beside their
backends' other tests."""

from __future__ import annotations

import importlib
import io
import math

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from pipeline.backends import BACKENDS
from pipeline.config import plain_config
from pipeline.loader import build_loader
from pipeline.views import recipe_from_config
from shards.index import write_index

TOLERANCE = 0.75  # view pixels (= ramp levels)
KERNEL_RADIUS = {"bilinear": 1, "bicubic": 2}


def _importable(backend: str) -> str | None:
    """None when ``backend``'s module imports here, else why not (e.g. DALI not installed)."""
    module = BACKENDS[backend].split(":")[0]
    try:
        importlib.import_module(module)
    except ImportError as e:
        return f"backend {backend!r} does not import here: {e}"
    if backend == "dali":
        from pipeline.backends.dali_backend import dali_import_error

        return dali_import_error()
    return None


@pytest.fixture(scope="module")
def ramp_shard(tmp_path_factory) -> str:
    """12 ramps of sizes 120-256 x 100-192 in one PNG shard with its DALI index."""
    path = tmp_path_factory.mktemp("oracle") / "ramps-000000.tar"
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(path)) as sink:
        for i in range(12):
            w, h = int(rng.integers(120, 257)), int(rng.integers(100, 193))
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0], img[..., 1], img[..., 2] = np.arange(w)[None], np.arange(h)[:, None], 128
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "PNG")
            sink.write({"__key__": f"ramp{i:03d}", "png": buf.getvalue()})
    write_index(path, path.with_suffix(".idx"))
    return str(path)


def ramp_errors(batch, view: int, matrices: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, S, S]``: per view pixel, |position its colour encodes - A^-1 (its centre)| (max of x, y)."""
    img = batch.views[view].double()
    c = torch.arange(img.shape[-1], dtype=torch.float64) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    inv = torch.linalg.inv((batch.matrices[:, view] if matrices is None else matrices).double())[:, :2, :, None, None]
    x, y = (inv[:, i, 0] * xx + inv[:, i, 1] * yy + inv[:, i, 2] for i in (0, 1))
    return torch.maximum((img[:, 0] + 0.5 - x).abs(), (img[:, 1] + 0.5 - y).abs())


def interior_max(batch, recipe, view: int, errors: torch.Tensor) -> float:
    """The largest error of ``view`` outside the ring of each sample's kernel reach."""
    spec, size, worst = recipe.views[view], errors.shape[-1], 0.0
    for b in range(batch.batch_size):
        zoom = float(batch.matrices[b, view, :2, :2].abs().max())  # view px per image px (> 1: upsampling)
        ring = math.ceil(KERNEL_RADIUS[spec.interpolation] * max(1.0, zoom))
        assert size - 2 * ring > 0
        worst = max(worst, float(errors[b, ring : size - ring, ring : size - ring].max()))
    return worst


def _batches(shard: str, backend: str, recipe: str):
    if (why := _importable(backend)) is not None:
        pytest.skip(why)
    cfg = plain_config(shard, backend=backend, recipe=recipe, global_size=32, local_size=16, num_local=2, batch_size=4)
    cfg.shuffle_buffer = 0
    return list(build_loader(cfg, device="cpu")), recipe_from_config(cfg)


@pytest.mark.parametrize("recipe", ["clove", "gtsa"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_every_backend_puts_every_pixel_where_its_matrix_says(ramp_shard, backend, recipe):
    batches, views = _batches(ramp_shard, backend, recipe)
    assert sum(b.batch_size for b in batches) == 12
    flips, turns = set(), set()
    for batch in batches:
        assert batch.views[0].dtype == torch.uint8  # normalize off: the colours are the positions
        flips |= set((torch.linalg.det(batch.matrices[..., :2, :2]) < 0).flatten().tolist())
        turns |= set(batch.rotation.flatten().tolist())
        for v in range(batch.num_views):
            worst = interior_max(batch, views, v, ramp_errors(batch, v))
            assert worst <= TOLERANCE, f"{backend}/{recipe} view {v}: error {worst:.3f} px > {TOLERANCE}"
    if recipe == "clove":
        assert flips == {True, False} and turns == {0}
    else:
        assert turns == {0, 1, 2, 3} and flips == {False}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_oracle_fails_half_a_pixel_of_shift_and_a_forgotten_flip(ramp_shard, backend):
    batches, views = _batches(ramp_shard, backend, "clove")
    batch = batches[0]
    m = batch.matrices[:, 0]
    shifted = m.clone()
    shifted[:, 0, 2] += 0.5
    size = batch.views[0].shape[-1]
    flipped = torch.tensor([[-1.0, 0, size], [0, 1, 0], [0, 0, 1]]) @ m
    for wrong in (shifted, flipped):
        assert interior_max(batch, views, 0, ramp_errors(batch, 0, wrong)) > TOLERANCE
