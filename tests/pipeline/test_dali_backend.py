"""The DALI backend, CPU-only (``device_id=None``): geometry oracle, epochs, ranks, checkpoints, errors
(its photometric part: test_dali_photometric.py).

The oracle trusts nothing in the backend: every test image stores its own pixel-centre
coordinates as colours (red = x, green = y, a linear ramp), so the colour read back at a view
pixel tells where in the original image that pixel came from; it must equal ``A_v^-1`` applied to
the pixel centre, within the error of 8-bit quantisation and interpolation.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.backends.dali_backend import INSTALL_HINT, DaliViewLoader, dali_import_error, flip_turn_table, view_matrices
from pipeline.config import LoaderConfig
from pipeline.geometry import inverse_coordinate_map
from pipeline.loader import build_loader
from pipeline.views import named_recipe, view_matrix
from shards.writer import ShardWriter
from tests.pipeline.helpers import backend_config

needs_dali = pytest.mark.skipif(dali_import_error() is not None, reason=INSTALL_HINT)


# ---------------------------------------------------------------------------------------------
# Fixtures: tiny shards of coordinate-encoded images
# ---------------------------------------------------------------------------------------------


def ramp(width: int, height: int) -> np.ndarray:
    """``[H, W, 3]`` uint8: red encodes the x of each pixel centre, green its y (0..255 over W/H)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = np.round((np.arange(width) + 0.5) * 255 / width)[None, :]
    img[..., 1] = np.round((np.arange(height) + 0.5) * 255 / height)[:, None]
    img[..., 2] = 77
    return img


def encode(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":  # best quality, no chroma subsampling: the ramp survives to ~2 levels
        Image.fromarray(img).save(buf, "JPEG", quality=100, subsampling=0)
    else:
        Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def write_shards(root: Path, fmt: str, shards: int = 2, per_shard: int = 7, seed: int = 0) -> dict:
    """Shards ``train-00000k.tar`` + ``.idx`` via shards/ (the writer users run); returns truth.

    Every third sample has no ``.cls`` (label -1); the others have label ``10 * shard + i``.
    """
    rng = np.random.default_rng(seed)
    truth = {}
    for s in range(shards):
        writer = ShardWriter(root / f"train-{s:06d}.tar")
        for i in range(per_shard):
            w, h = int(rng.integers(40, 70)), int(rng.integers(40, 70))
            key = f"s{s}_{i:03d}"
            members = [(fmt, encode(ramp(w, h), fmt))]
            label = -1 if i % 3 == 0 else 10 * s + i
            if label >= 0:
                members.append(("cls", str(label).encode()))
            writer.add(key, members)
            truth[key] = (w, h, label)
        writer.finish()
        writer.commit()
    return truth


@pytest.fixture(scope="module")
def png_shards(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("dali_png")
    return root, write_shards(root, "png")


@pytest.fixture(scope="module")
def jpg_shards(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("dali_jpg")
    return root, write_shards(root, "jpg", shards=1, per_shard=10, seed=1)


def config(root: Path, **kw) -> LoaderConfig:
    fields = dict(global_size=24, local_size=12, batch_size=3, num_workers=1, shuffle_buffer=8, prefetch_factor=2)
    return backend_config(str(root), "dali", **{**fields, "photometric": False, "normalize": False, **kw})


# ---------------------------------------------------------------------------------------------
# Geometry oracle
# ---------------------------------------------------------------------------------------------


def oracle_errors(batch, view: int, matrices: torch.Tensor | None = None) -> torch.Tensor:
    """Per view pixel: |colour-decoded position - A^-1 (pixel centre)| in 8-bit levels of the ramp.

    One level is ``W / 255`` original pixels in x and ``H / 255`` in y; the larger of the two
    errors is returned, ``[B, S, S]``.
    """
    img = batch.views[view].double()  # [B, 3, S, S] uint8 values
    size = img.shape[-1]
    m = batch.matrices[:, view] if matrices is None else matrices
    truth = inverse_coordinate_map(m.double(), size, size)  # [B, 2, S, S]
    w = batch.image_size[:, 0].double()[:, None, None]
    h = batch.image_size[:, 1].double()[:, None, None]
    return torch.maximum((img[:, 0] - truth[:, 0] * 255 / w).abs(), (img[:, 1] - truth[:, 1] * 255 / h).abs())


# The ramp is rounded once when stored and the view once when written: 1 level; interpolating the
# rounded ramp adds at most half a level more near clamped image borders.
PNG_TOL = 1.5
JPEG_TOL = 3.0  # plus JPEG's own error on a smooth ramp (measured ~2 levels at quality 100)


@needs_dali
@pytest.mark.parametrize("recipe,sampler", [("clove", "dali"), ("two-view", "dali")])
def test_oracle_png(png_shards, recipe, sampler):
    """DALI's own sampler (``data.dali_sampler=dali``): colours read back sit where A_v^-1 says. The
    shared sampler passes the oracle every backend passes (tests/pipeline/test_oracle_every_backend.py)."""
    root, _ = png_shards
    loader = DaliViewLoader(config(root, recipe=recipe), sampler=sampler)
    flips, turns, views = set(), set(), 0
    for batch in loader:
        det = torch.linalg.det(batch.matrices[..., :2, :2])
        flips |= set((det < 0).flatten().tolist())
        turns |= set(batch.rotation.flatten().tolist())
        for v in range(batch.num_views):
            err = oracle_errors(batch, v)
            assert (err <= PNG_TOL).all(), f"view {v}: max error {err.max():.3f} levels"
            views += batch.batch_size
    assert views == 14 * len(loader.recipe.views)
    if recipe == "clove":
        assert flips == {True, False}
    if recipe == "gtsa":
        assert turns == {0, 1, 2, 3} and flips == {False}


@needs_dali
def test_oracle_jpeg_roi_decode(jpg_shards):
    """JPEG through the ROI decoder (windows not aligned to 8x8 blocks); JPEG adds ~2 levels."""
    root, _ = jpg_shards
    loader = DaliViewLoader(config(root, recipe="gtsa"))
    offsets = set()
    for batch in loader:
        inv = torch.linalg.inv(batch.matrices.double())
        offsets |= set((inv[..., 0, 2].round() % 8).long().flatten().tolist())
        for v in range(batch.num_views):
            err = oracle_errors(batch, v)
            assert (err <= JPEG_TOL).all(), f"view {v}: max error {err.max():.3f} levels"
    assert len(offsets) > 1


def test_vectorised_matrices_match_view_matrix():
    """The batched builder equals views.view_matrix (the shared per-view builder) exactly."""
    recipe = named_recipe("gtsa", global_size=32, local_size=16, num_local=3)
    rng = np.random.default_rng(0)
    b, nv = 5, len(recipe.views)
    windows = torch.from_numpy(rng.integers(1, 60, (b, nv, 4)).astype(np.float32))
    flips = torch.from_numpy(rng.integers(0, 2, (b, nv)))
    turns = torch.from_numpy(rng.integers(0, 4, (b, nv)))
    table = torch.from_numpy(flip_turn_table(recipe))
    got = view_matrices(windows, flips, turns, torch.tensor(recipe.sizes), table)
    for i in range(b):
        for v, spec in enumerate(recipe.views):
            want = view_matrix(tuple(windows[i, v].tolist()), spec.size, bool(flips[i, v]), int(turns[i, v]))
            np.testing.assert_allclose(got[i, v].numpy(), want, rtol=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Batches, epochs, ranks, checkpoints
# ---------------------------------------------------------------------------------------------


@needs_dali
def test_batch_fields_through_build_loader(png_shards):
    """Dispatch through pipeline.loader; sizes, labels (-1 without .cls), keys, dtypes."""
    root, truth = png_shards
    loader = build_loader(config(root, normalize=True, channels_last=True))
    seen = []
    for batch in loader:
        assert [tuple(v.shape[1:]) for v in batch.views] == [(3, 24, 24)] * 2 + [(3, 12, 12)] * 2
        assert all(v.dtype == torch.float32 and v.is_contiguous(memory_format=torch.channels_last) for v in batch.views)
        assert batch.matrices.shape == (batch.batch_size, 4, 3, 3) and batch.matrices.dtype == torch.float32
        for key, size, label in zip(batch.keys, batch.image_size.tolist(), batch.labels.tolist()):
            assert (size[0], size[1], label) == truth[key]
        seen += batch.keys
    assert sorted(seen) == sorted(truth)  # one exact pass, world size 1
    assert batch.stats["samples"] == 14 and batch.stats["bad_samples"] == 0


@needs_dali
def test_exact_epochs_two_ranks_cover_every_sample_once(png_shards):
    root, truth = png_shards
    loaders = [DaliViewLoader(config(root), rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        keys = []
        for loader in loaders:
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == len(loader) == 3  # 7 samples per rank: 3 + 3 + 1
            keys += [k for b in batches for k in b.keys]
        assert sorted(keys) == sorted(truth), f"epoch {epoch}"


@needs_dali
def test_abandoned_exact_epoch_then_set_epoch(png_shards):
    """Leaving an exact epoch half-way and moving on still gives whole, exact epochs after it."""
    root, truth = png_shards
    loader = DaliViewLoader(config(root))
    next(iter(loader))
    loader.set_epoch(1)
    assert sorted(k for b in loader for k in b.keys) == sorted(truth)
    resumed = DaliViewLoader(config(root))
    it = iter(loader)  # epoch 2
    next(it)
    resumed.load_state_dict(loader.state_dict())
    resumed.set_epoch(3)  # abandon the resumed epoch before reading from it
    assert sorted(k for b in resumed for k in b.keys) == sorted(truth)


@needs_dali
def test_fixed_samples_per_epoch_equal_batches_no_hang(png_shards):
    """samples_per_epoch: every rank yields the same number of full batches, epoch after epoch."""
    root, _ = png_shards
    for rank in range(2):
        loader = DaliViewLoader(config(root, samples_per_epoch=10), rank=rank, world_size=2)
        assert len(loader) == 3
        for epoch in range(3):  # 3 x 9 samples > the 7 of this rank: the reader wraps, no hang
            loader.set_epoch(epoch)
            sizes = [b.batch_size for b in loader]
            assert sizes == [3, 3, 3]


@needs_dali
@pytest.mark.parametrize("samples_per_epoch", [None, 9])
def test_checkpoint_resumes_the_same_stream(png_shards, samples_per_epoch):
    root, _ = png_shards
    cfg = config(root, samples_per_epoch=samples_per_epoch, recipe="gtsa")

    def record(loader, epochs):
        out = []
        for _ in range(epochs):
            out += [(b.keys, b.matrices, b.views[2]) for b in loader]
        return out

    a = DaliViewLoader(cfg)
    it = iter(a)
    next(it)
    state = a.state_dict()
    rest = [(b.keys, b.matrices, b.views[2]) for b in it] + record(a, 1)
    b = DaliViewLoader(cfg)
    b.load_state_dict(state)
    again = record(b, 2)  # the rest of the interrupted epoch, then the next one
    assert len(again) == len(rest) == 2 * len(a) - 1
    for (ka, ma, va), (kb, mb, vb) in zip(rest, again):
        assert ka == kb
        assert torch.equal(ma, mb) and torch.equal(va, vb)


@needs_dali
def test_state_of_another_rank_and_fresh_starts(png_shards):
    root, _ = png_shards
    zero = DaliViewLoader(config(root, samples_per_epoch=6), rank=0, world_size=2)
    next(iter(zero))
    one = DaliViewLoader(config(root, samples_per_epoch=6), rank=1, world_size=2)
    with pytest.warns(UserWarning, match="reader restarts"):
        one.load_state_dict(zero.state_dict())
    assert len(list(one)) == 1  # the rest of the epoch: 2 batches, 1 consumed
    # A run restarted at epoch 3 without loader state draws other views than epoch 0 did.
    first = next(iter(DaliViewLoader(config(root, samples_per_epoch=6))))
    late = DaliViewLoader(config(root, samples_per_epoch=6))
    late.set_epoch(3)
    assert not torch.equal(next(iter(late)).matrices, first.matrices)


@needs_dali
def test_photometric_loader_runs(png_shards):
    root, _ = png_shards
    batch = next(iter(build_loader(config(root, photometric=True, normalize=True))))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in batch.views)


# ---------------------------------------------------------------------------------------------
# Bad input and optional dependency
# ---------------------------------------------------------------------------------------------


@needs_dali
def test_corrupt_image_one_line_error(tmp_path):
    writer = ShardWriter(tmp_path / "train-000000.tar")
    for i in range(4):
        data = encode(ramp(40, 40), "jpg") if i != 2 else b"not an image at all"
        writer.add(f"k{i}", [("jpg", data)])
    writer.finish()
    writer.commit()
    loader = DaliViewLoader(config(tmp_path, recipe="two-view", batch_size=2, shuffle_buffer=0))
    with pytest.raises(RuntimeError, match="shards verify") as info:
        list(loader)
    assert "\n" not in str(info.value)


@needs_dali
def test_sample_without_image_and_missing_index_refused(tmp_path):
    writer = ShardWriter(tmp_path / "train-000000.tar")
    writer.add("a", [("png", encode(ramp(40, 40), "png"))])
    writer.add("b", [("cls", b"3")])
    writer.finish()
    writer.commit()
    with pytest.raises(ValueError, match="1 samples .* no image member"):
        DaliViewLoader(config(tmp_path))
    (tmp_path / "train-000000.idx").unlink()
    with pytest.raises(ValueError, match="missing DALI index"):
        DaliViewLoader(config(tmp_path))


@needs_dali
def test_dali_sampler_refuses_overlap_rules(png_shards):
    root, _ = png_shards
    with pytest.raises(ValueError, match="overlap rule"):
        DaliViewLoader(config(root, recipe="gtsa"), sampler="dali")


@needs_dali
def test_gpu_graph_builds_without_a_gpu(png_shards):
    """The mixed-decoder/GPU graph at least type-checks on the Python side (no CUDA needed)."""
    import dataclasses

    from nvidia.dali import pipeline_def

    from pipeline.backends.dali_pipeline import _graph

    root, _ = png_shards
    for recipe in ("clove", "gtsa"):
        loader = DaliViewLoader(config(root, recipe=recipe, photometric=True))
        g = dataclasses.replace(loader.graph, gpu=True)
        pipe = pipeline_def(_graph)(g, batch_size=2, num_threads=1, device_id=0, seed=0)
        pipe._build_graph()  # private, but the only no-CUDA check DALI offers


@pytest.mark.gpu
@needs_dali
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_oracle_png_gpu(png_shards):
    """Same oracle with the mixed decoder and GPU operators."""
    root, _ = png_shards
    for recipe in ("clove", "gtsa"):
        for batch in DaliViewLoader(config(root, recipe=recipe), device="cuda"):
            assert batch.views[0].is_cuda and batch.matrices.is_cuda
            for v in range(batch.num_views):
                err = oracle_errors(batch, v)
                assert (err <= PNG_TOL).all(), f"{recipe} view {v}: {err.max():.3f} levels"


def test_without_dali_one_line_install_hint(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "nvidia.dali" or m.startswith("nvidia.dali.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import now fails like an absent package
    with pytest.raises(ImportError) as info:
        build_loader(config(tmp_path))
    assert "pip install 'densessl[dali]'" in str(info.value) and "\n" not in str(info.value)
