"""The torch backend end to end on CPU tensors (decode=cpu, and the gpu-decode logic with
torchvision's CPU JPEG decoder standing in for nvJPEG), on small real-photo shards."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from pipeline.backends.cpu_backend import make_views
from pipeline.backends.torch_backend import (
    DeviceAugmenter,
    RawBatch,
    TorchBatchMaker,
    collate_drawn,
    decode_on_device,
    draw_sample,
    resolve_decode,
    view_groups,
)
from pipeline.batch import IMAGENET_MEAN, IMAGENET_STD
from pipeline.config import LoaderConfig
from pipeline.decode import decode_image
from pipeline.loader import build_loader
from pipeline.source import RawSample
from pipeline.views import Recipe, ViewSpec
from tests.pipeline.helpers import backend_config

CPU = torch.device("cpu")


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def small_photo(path, long_side: int = 160) -> Image.Image:
    im = Image.open(path)
    im.draft("RGB", (long_side * 2, long_side * 2))  # reduced JPEG decode: fast
    im = im.convert("RGB")
    im.thumbnail((long_side, long_side))
    return im


@pytest.fixture(scope="module")
def torch_photo_shards(tmp_path_factory, real_jpegs):
    """Two shards of 6 small real photos each (keys 000..011)."""
    root = tmp_path_factory.mktemp("torch_shards")
    photos = [small_photo(p) for p in real_jpegs[:12]]
    while len(photos) < 12:
        photos.append(photos[len(photos) % 4].transpose(Image.FLIP_LEFT_RIGHT))
    for s in range(2):
        with wds.TarWriter(str(root / f"photos-{s:06d}.tar")) as tw:
            for i in range(6 * s, 6 * s + 6):
                tw.write({"__key__": f"{i:03d}", "jpg": jpeg_bytes(photos[i]), "cls": str(i)})
    return root, photos


def as_chw(view) -> torch.Tensor:
    """A cpu-backend view (CHW tensor, or HWC array in older versions) as a CHW tensor."""
    t = torch.from_numpy(np.ascontiguousarray(view)) if isinstance(view, np.ndarray) else view
    return t.permute(2, 0, 1) if t.shape[0] != 3 else t


def config(root, **kw) -> LoaderConfig:
    fields = dict(global_size=32, local_size=16, batch_size=4, num_workers=0, decode="cpu", shuffle_buffer=1)
    return backend_config(str(root), "torch", **{**fields, **kw})


def test_end_to_end_decode_cpu_every_sample_once(torch_photo_shards):
    root, _ = torch_photo_shards
    loader = build_loader(config(root))
    batches = list(loader)
    keys = sorted(k for b in batches for k in b.keys)
    assert keys == [f"{i:03d}" for i in range(12)]
    b = batches[0]
    assert [tuple(v.shape) for v in b.views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 2
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in b.views)
    # normalised ImageNet-style: values of real photos land around [-2.2, 2.7]
    lo = -max(m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    hi = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    assert all(v.min() >= lo - 1e-4 and v.max() <= hi + 1e-4 for v in b.views)
    assert b.matrices.shape == (4, 4, 3, 3) and b.matrices.dtype == torch.float32
    assert b.labels.tolist() == [int(k) for k in b.keys]
    assert loader.stats["samples"] == 12 and loader.stats["bad_samples"] == 0
    assert loader.state_dict()["epoch"] == 1


def test_views_agree_with_the_cpu_backend_for_the_same_draws(torch_photo_shards, real_jpegs):
    # Two independent implementations (per-crop antialiased resize vs batched atlas sampling),
    # same per-sample RNG -> same windows, flips and turns. Photometrics off.
    root, photos = torch_photo_shards
    recipe = Recipe(
        "t", (ViewSpec(40, (0.3, 1.0), rotate=True, photometric=None), ViewSpec(24, (0.1, 0.4), flip_p=1.0, photometric=None))
    )
    samples = [RawSample(f"{i}", jpeg_bytes(p), "jpg") for i, p in enumerate(photos[:4])]
    cpu = [make_views(s, recipe, random.Random(i)) for i, s in enumerate(samples)]
    maker = TorchBatchMaker(recipe, gpu_decode=False, fill_bad=False)
    raw = maker(samples, [random.Random(i) for i in range(4)], {})
    batch = DeviceAugmenter(recipe, CPU, normalize=False)(raw)
    for i in range(4):
        for v in range(2):
            ours = batch.views[v][i].float()
            ref = as_chw(cpu[i].views[v]).float()
            mse = float(((ours - ref) ** 2).mean())
            assert 10 * math.log10(255**2 / max(mse, 1e-6)) > 24.0, (i, v)
        # The cpu backend rounds windows to decoded pixels (half a decoded pixel at most, per edge);
        # ours are the drawn ones, exactly. Compare where the view corners land in the original.
        half = 0.5 * 8 / cpu[i].decode_num + 1e-4  # + float32 matrices
        for v, size in enumerate((40, 24)):
            corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=float).T
            ours_pts = np.linalg.inv(batch.matrices[i, v].double().numpy()) @ corners
            cpu_pts = np.linalg.inv(cpu[i].matrices[v]) @ corners
            assert np.abs(ours_pts - cpu_pts).max() <= half
        assert torch.equal(batch.rotation[i], torch.from_numpy(cpu[i].turns))


def test_coordinate_images_through_the_device_step_with_decode_scale():
    # Worker-decoded pixels at DCT scale 1/2: pixel (i, j) stores its original centre (2j+1, 2i+1)
    # in R and G (exact in uint8). The device step must fold the scale in: each output pixel
    # reads A_v^-1 c. Views of 64 px shrink < 2x here: level 0, where bilinear is exact on a ramp.
    recipe = Recipe("t", (ViewSpec(64, (0.2, 1.0), rotate=True, photometric=None),))
    orig_w, orig_h = 250, 200
    h, w = orig_h // 2, orig_w // 2
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.stack([2 * xs + 1, 2 * ys + 1, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    rng = random.Random(5)
    from pipeline.views import sample_views

    items = []
    for k in range(3):
        p = sample_views(orig_w, orig_h, recipe, rng)
        from pipeline.backends.torch_backend import Drawn
        from pipeline.photometric import IDENTITY

        items.append(Drawn(img, False, 0.5, p.matrices, p.turns, [IDENTITY], (orig_w, orig_h), -1, str(k), 0))
    raw = collate_drawn(items, view_groups(recipe))
    batch = DeviceAugmenter(recipe, CPU, normalize=True)(raw)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    c = np.arange(64) + 0.5
    u, v = np.meshgrid(c, c)
    for k, it in enumerate(items):
        got = (batch.views[0][k] * std + mean)[:2].double().numpy()
        want = np.linalg.inv(it.matrices[0]) @ np.stack([u.ravel(), v.ravel(), np.ones(64 * 64)])
        want = want[:2].reshape(2, 64, 64)
        # within one decoded pixel (2 original px) of the border the edge pixel is replicated
        inner = (want[0] > 3) & (want[0] < orig_w - 3) & (want[1] > 3) & (want[1] < orig_h - 3)
        err = np.abs(got - want).max(axis=0)
        assert err[inner].max() < 0.01 and err.max() <= 1.0 + 1e-3


def test_gpu_decode_path_with_bad_bytes_falls_back_and_counts(torch_photo_shards):
    # The decode="gpu" logic, run with torchvision's CPU decoder in place of nvJPEG: a batched
    # call, per-image retry when it fails, CPU fallback, skip-and-count of undecodable bytes.
    _, photos = torch_photo_shards
    recipe = Recipe("t", (ViewSpec(16, (0.3, 1.0), photometric=None),))
    good = [jpeg_bytes(p) for p in photos[:3]]
    png = io.BytesIO()
    photos[3].save(png, "PNG")
    cmyk = jpeg_bytes(photos[4].convert("CMYK"))
    sos = good[0].index(b"\xff\xda")
    broken = good[0][: sos + 14]  # valid header, image data cut right after the scan header
    samples = [RawSample(str(i), b, "jpg") for i, b in enumerate([good[0], broken, good[1], png.getvalue(), cmyk, good[2]])]
    maker = TorchBatchMaker(recipe, gpu_decode=True, fill_bad=False)
    raw = maker(samples, [random.Random(i) for i in range(6)], {})
    assert raw.encoded == [True, True, True, False, False, True]  # PNG and CMYK decoded in the worker
    counters: dict[str, int] = {}
    images = decode_on_device(raw, CPU, counters)
    assert images[1] is None and counters["bad_samples"] == 1
    for i in (0, 2, 5):
        ref = np.array(Image.open(io.BytesIO(samples[i].image)).convert("RGB"))
        assert images[i].shape == (3, *ref.shape[:2])
        assert (images[i].permute(1, 2, 0).float() - torch.from_numpy(ref).float()).abs().mean() < 2.0
    aug = DeviceAugmenter(recipe, CPU)
    batch = aug(raw)
    assert batch.keys == ["0", "2", "3", "4", "5"] and batch.views[0].shape[0] == 5
    assert aug.counters["bad_samples"] == 1


def test_bad_samples_are_replaced_when_resampling(tmp_path, torch_photo_shards):
    _, photos = torch_photo_shards
    with wds.TarWriter(str(tmp_path / "bad-000000.tar")) as tw:
        for i in range(8):
            data = b"not an image at all" if i in (2, 5) else jpeg_bytes(photos[i])
            tw.write({"__key__": f"{i:03d}", "jpg": data})
    loader = build_loader(config(tmp_path, recipe="two-view", samples_per_epoch=8, num_workers=0))
    sizes = [b.batch_size for b in loader]
    assert sizes == [4, 4]
    assert loader.stats["bad_samples"] == 2


def test_decode_modes():
    assert resolve_decode("auto", CPU) == "cpu"
    assert resolve_decode("cpu", CPU) == "cpu"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_decode("gpu", CPU)
    with pytest.raises(ValueError):
        resolve_decode("nvjpeg", CPU)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvJPEG)")
def test_gpu_decode_end_to_end(torch_photo_shards):
    root, _ = torch_photo_shards
    loader = build_loader(config(root, decode="gpu", num_workers=2), device="cuda")
    batches = list(loader)
    assert sorted(k for b in batches for k in b.keys) == [f"{i:03d}" for i in range(12)]
    assert all(v.is_cuda for v in batches[0].views) and loader.stats["bad_samples"] == 0


def test_draw_sample_ships_bytes_only_for_gpu_decodable_jpegs(torch_photo_shards):
    _, photos = torch_photo_shards
    recipe = Recipe("t", (ViewSpec(16, (0.3, 1.0), photometric=None),))
    s = RawSample("k", jpeg_bytes(photos[0]), "jpg")
    d = draw_sample(s, recipe, random.Random(0), gpu_decode=True, reduced_decode=True)
    assert d.encoded and d.scale == 1.0 and d.data.dtype == np.uint8 and d.data.ndim == 1
    d = draw_sample(s, recipe, random.Random(0), gpu_decode=False, reduced_decode=True)
    assert not d.encoded and d.data.ndim == 3 and d.scale in (0.125, 0.25, 0.5, 1.0)
    assert isinstance(collate_drawn([d], view_groups(recipe)), RawBatch)


def test_a_packed_batch_gives_back_every_sample_and_decodes_on_the_device(torch_photo_shards):
    """Bytes and pixels of several samples share one buffer; each comes back intact, and the
    device step decodes both kinds (nvJPEG's code path, here on the CPU)."""
    _, photos = torch_photo_shards
    recipe = Recipe("t", (ViewSpec(16, (0.3, 1.0), photometric=None),))
    samples = [RawSample(f"k{i}", jpeg_bytes(p), "jpg") for i, p in enumerate(photos[:3])]
    drawn = [draw_sample(s, recipe, random.Random(i), gpu_decode=i != 1, reduced_decode=False) for i, s in enumerate(samples)]
    raw = collate_drawn(drawn, view_groups(recipe))
    assert [raw.item(i).shape for i in range(3)] == [d.data.shape for d in drawn] and raw.encoded == [True, False, True]
    for i, d in enumerate(drawn):
        assert np.array_equal(raw.item(i).numpy(), d.data)
    images = decode_on_device(raw, CPU, {})
    for img, s in zip(images, samples):
        ref = torch.from_numpy(decode_image(s.image, 8).image).permute(2, 0, 1)
        assert img.shape == ref.shape and (img.int() - ref.int()).abs().float().mean() < 1.0
    pixels_only = collate_drawn([drawn[1], drawn[1]], view_groups(recipe))  # the one-copy path
    assert all(torch.equal(img, images[1]) for img in decode_on_device(pixels_only, CPU, {}))


def test_resume_from_state_dict_continues_the_same_batches(torch_photo_shards):
    root, _ = torch_photo_shards
    cfg = config(root, recipe="two-view", samples_per_epoch=12, batch_size=3)
    full = [(b.keys, b.views[0].clone()) for b in build_loader(cfg)]
    first = build_loader(cfg)
    it = iter(first)
    next(it)
    state = first.state_dict()
    second = build_loader(cfg)
    second.load_state_dict(state)
    rest = [(b.keys, b.views[0]) for b in second]
    assert len(full) == 4 and len(rest) == 3
    for (k1, v1), (k2, v2) in zip(full[1:], rest):
        assert k1 == k2 and torch.equal(v1, v2)
