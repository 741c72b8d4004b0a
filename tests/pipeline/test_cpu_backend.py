"""The cpu backend end to end, its decoder and its photometric ops.

Bad samples, resumption, batch fields and normalisation go through the loader; decoding is checked
against PIL and hand-computed scales; photometric ops against torchvision's PIL functions (the
semantics the public CLoVE/GTSA code runs).
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
import webdataset as wds
from PIL import Image

from pipeline.backends import cpu_backend
from pipeline.backends.cpu_backend import build_cpu_loader
from pipeline.backends.photometric_cpu import apply_photometric
from pipeline.batch import IMAGENET_MEAN, IMAGENET_STD
from pipeline.decode import DecodeError, choose_scale, decode_image, decoded_window, image_size
from pipeline.loader import build_loader
from pipeline.photometric import PhotometricParams, draw_photometric
from pipeline.stream_loader import StreamLoader
from pipeline.views import Photometric
from tests.pipeline.helpers import run_with_timeout, small_jpegs, tiny_config, write_shards


@pytest.fixture(scope="module")
def photo_bytes(real_jpegs) -> list[bytes]:
    return small_jpegs(real_jpegs, 24)


@pytest.fixture()
def shards(tmp_path, photo_bytes):
    keys = write_shards(tmp_path / "shards", photo_bytes, n_shards=3)
    return str(tmp_path / "shards"), keys


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _huge_header(jpeg: bytes, side: int = 30000) -> bytes:
    """A valid small JPEG whose frame header claims ``side x side`` pixels."""
    data = bytearray(jpeg)
    i = 2
    while data[i] == 0xFF and data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    data[i + 5 : i + 7] = side.to_bytes(2, "big")  # height
    data[i + 7 : i + 9] = side.to_bytes(2, "big")  # width
    return bytes(data)


def _odd_samples(photo: bytes) -> tuple[list[dict], list[dict]]:
    """(usable samples in unusual formats, bad samples) for one shard."""
    rgb = Image.open(io.BytesIO(photo)).convert("RGB")
    good = [
        {"__key__": "cmyk", "jpg": _encode(rgb.convert("CMYK"), "JPEG")},
        {"__key__": "gray", "jpg": _encode(rgb.convert("L"), "JPEG")},
        {"__key__": "png", "png": _encode(rgb, "PNG")},
        {"__key__": "rgba", "png": _encode(rgb.convert("RGBA"), "PNG")},
        {"__key__": "gray16", "png": _encode(Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257), "PNG")},
        {"__key__": "webp", "webp": _encode(rgb, "WEBP")},
        {"__key__": "palette", "png": _encode(rgb.convert("P"), "PNG")},
    ]
    bad = [
        {"__key__": "garbage", "jpg": b"this is not an image at all" * 10},
        {"__key__": "empty", "jpg": b""},
        {"__key__": "truncated", "jpg": photo[: len(photo) // 3]},
        {"__key__": "tiny", "png": _encode(Image.new("RGB", (1, 1)), "PNG")},
        {"__key__": "huge", "jpg": _huge_header(photo)},
        {"__key__": "nolabelnoimage", "cls": "4"},
        {"__key__": "fakejpeg", "jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 200},
    ]
    return good, bad


def _odd_shard(path, photo_bytes) -> tuple[list[str], int]:
    good, bad = _odd_samples(photo_bytes[0])
    normal = [{"__key__": f"ok{i}", "jpg": b, "cls": str(i)} for i, b in enumerate(photo_bytes[1:9])]
    samples = normal[:4] + bad[:4] + good + normal[4:] + bad[4:]
    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            sink.write(s)
    return [s["__key__"] for s in normal + good], len(bad)


# --------------------------------------------------------------------------------------------
# Loader
# --------------------------------------------------------------------------------------------


def test_bad_samples_are_skipped_and_counted_in_an_exact_pass(tmp_path, photo_bytes):
    good_keys, n_bad = _odd_shard(tmp_path / "odd-000000.tar", photo_bytes)
    loader = build_cpu_loader(
        tiny_config(
            str(tmp_path / "odd-000000.tar"), recipe="clove", global_size=32, local_size=16, num_local=2, photometric=True
        )
    )
    batches = run_with_timeout(lambda: list(loader))
    keys = [k for b in batches for k in b.keys]
    assert sorted(keys) == sorted(good_keys)  # every usable sample once, CMYK/gray/PNG/WebP included
    assert loader.stats["bad_samples"] == n_bad and loader.stats["samples"] == len(good_keys)
    for b in batches:
        assert [tuple(v.shape[1:]) for v in b.views] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 2
        assert all(v.dtype == torch.uint8 for v in b.views)


def test_bad_samples_are_replaced_when_resampling(tmp_path, photo_bytes):
    _, n_bad = _odd_shard(tmp_path / "odd-000000.tar", photo_bytes)
    cfg = tiny_config(str(tmp_path / "odd-000000.tar"), samples_per_epoch=40, shuffle_buffer=4)
    loader = build_cpu_loader(cfg)
    batches = run_with_timeout(lambda: list(loader))
    assert len(batches) == len(loader) == 10 and all(b.batch_size == 4 for b in batches)
    stats = loader.stats
    # bad_samples: distinct bad samples (each once, though re-read); bad_reads: every failed read
    assert 0 < stats["bad_samples"] <= n_bad and stats["samples"] + stats["bad_reads"] == 40
    assert batches[-1].stats == stats


def test_batch_fields(shards, photo_bytes):
    directory, _ = shards
    cfg = tiny_config(directory, recipe="gtsa", global_size=32, local_size=16, num_local=3, batch_size=5, num_workers=0)
    batch = next(iter(build_cpu_loader(cfg)))
    assert batch.matrices.shape == (5, 5, 3, 3) and batch.matrices.dtype == torch.float32
    assert batch.rotation.shape == (5, 5) and set(batch.rotation.unique().tolist()) <= {0, 1, 2, 3}
    sizes = {f"s{i % 3}_{i:04d}": image_size(b) for i, b in enumerate(photo_bytes)}
    assert [tuple(s) for s in batch.image_size.tolist()] == [sizes[k] for k in batch.keys]
    assert batch.labels.tolist() == [int(k.split("_")[1]) % 10 for k in batch.keys]


def test_the_hue_kernel_is_compiled_before_the_workers_start(shards, monkeypatch):
    """Built in the main process when the recipe shifts hue, so forked workers inherit the machine code."""
    calls = []
    monkeypatch.setattr(cpu_backend, "compile_kernel", lambda: calls.append("compiled"))
    directory, _ = shards
    views = dict(recipe="clove", global_size=32, local_size=16, num_local=2)
    build_cpu_loader(tiny_config(directory, **views, photometric=False))
    assert calls == []
    build_cpu_loader(tiny_config(directory, **views, photometric=True))
    assert calls == ["compiled"]


def test_normalisation_and_channels_last_on_the_device(shards):
    directory, _ = shards
    base = dict(samples_per_epoch=8, num_workers=0, seed=3)
    raw = next(iter(build_cpu_loader(tiny_config(directory, **base))))
    norm = next(iter(build_cpu_loader(tiny_config(directory, normalize=True, **base))))
    cl = next(iter(build_cpu_loader(tiny_config(directory, normalize=True, channels_last=True, **base))))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    for r, n, c in zip(raw.views, norm.views, cl.views):
        assert n.dtype == torch.float32
        torch.testing.assert_close(n, (r.float() - mean) / std)
        assert c.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(c, n)


def _signature(batches) -> list:
    return [(b.keys, b.matrices, b.views[0]) for b in batches]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (ka, ma, va), (kb, mb, vb) in zip(a, b):
        assert ka == kb and torch.equal(ma, mb) and torch.equal(va, vb)


@pytest.mark.parametrize("samples_per_epoch", [28, None])
def test_resume_continues_the_same_batches_without_decoding_the_skipped_ones(shards, samples_per_epoch):
    directory, _ = shards
    cfg = tiny_config(directory, samples_per_epoch=samples_per_epoch, batch_size=3, seed=11)
    full = run_with_timeout(lambda: _signature(build_cpu_loader(cfg)))
    assert len(full) >= 6
    for consumed in (1, 4):
        loader = build_cpu_loader(cfg)
        it = iter(loader)
        head = [next(it) for _ in range(consumed)]
        state = loader.state_dict()
        assert state["epoch"] == 0 and state["batches"] == consumed
        resumed = build_cpu_loader(cfg)
        resumed.load_state_dict(state)
        tail = run_with_timeout(lambda resumed=resumed: _signature(resumed))
        _assert_same(_signature(head) + tail, full)
        # skipped positions were read, not decoded: only the tail's samples were decoded
        assert resumed.stats["samples"] == sum(len(t[0]) for t in tail)
        assert resumed.state_dict()["epoch"] == 1  # the epoch completed
        # breaking out of a loop and iterating again also continues where the consumer stopped
        rest = run_with_timeout(lambda loader=loader: _signature(loader))
        _assert_same(_signature(head) + rest, full)


def test_taking_every_batch_without_exhausting_the_iterator_ends_the_epoch(shards):
    """``for step in range(len(loader)): next(it)`` then a new ``iter()`` starts the next epoch."""
    directory, _ = shards
    cfg = tiny_config(directory, samples_per_epoch=8, batch_size=4, num_workers=1)
    loader = build_cpu_loader(cfg)
    it = iter(loader)
    _ = [next(it) for _ in range(len(loader))]
    second = run_with_timeout(lambda: [b.keys for b in loader])
    fresh = build_cpu_loader(cfg)
    fresh.set_epoch(1)
    assert second == run_with_timeout(lambda: [b.keys for b in fresh]) and len(second) == 2
    assert loader.state_dict()["epoch"] == 2


def test_iterating_leaves_the_global_torch_rng_alone(shards):
    """A resumed run restores the RNG after ``iter()``; the loader must not draw from it later (the
    DataLoader's worker seed at the first ``next()``), or drop-path and the like diverge."""
    directory, _ = shards
    loader = build_cpu_loader(tiny_config(directory, samples_per_epoch=8, batch_size=4, num_workers=1))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    keys = run_with_timeout(lambda: [b.keys for b in loader])
    assert len(keys) == 2 and torch.equal(torch.get_rng_state(), before)


def test_resume_rejects_another_worker_count(shards):
    directory, _ = shards
    state = build_cpu_loader(tiny_config(directory, samples_per_epoch=8)).state_dict()
    other = build_cpu_loader(tiny_config(directory, samples_per_epoch=8, num_workers=1))
    with pytest.raises(ValueError, match="num_workers"):
        other.load_state_dict(state)


def test_len_and_registry(shards):
    directory, _ = shards
    loader = build_loader(tiny_config(directory, samples_per_epoch=10, batch_size=4))
    assert isinstance(loader, StreamLoader) and len(loader) == 2
    with pytest.raises(TypeError):
        len(build_cpu_loader(tiny_config(directory)))
    with pytest.raises(ValueError):
        build_cpu_loader(tiny_config(directory, samples_per_epoch=2, batch_size=4))


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def test_choose_scale_hand_computed():
    # 800x600, one window 400x300 -> 96: at 1/8 50x38, 1/4 100x75 (75 < 96), 1/2 200x150 -> 1/2
    assert choose_scale(800, 600, np.array([[0, 0, 400, 300]]), [96]) == 4
    # the whole image -> 96: 1/8 gives 100x75, 1/4 gives 200x150 -> 1/4
    assert choose_scale(800, 600, np.array([[0, 0, 800, 600]]), [96]) == 2
    # every view must fit: a 224 view on a 500x400 window needs 1/2 (250x200 < 224 -> full)
    assert choose_scale(800, 600, np.array([[0, 0, 800, 600], [10, 10, 500, 400]]), [96, 224]) == 8
    # the largest need decides: small crop for a small view, big crop for a big view
    assert choose_scale(1600, 1200, np.array([[0, 0, 800, 800], [5, 5, 200, 200]]), [96, 24]) == 1
    # windows are rounded to decoded pixels before the check: 767 px at 1/8 -> 95.9 -> 96 ok
    assert choose_scale(1600, 1200, np.array([[0, 0, 767, 767]]), [96]) == 1


def test_decoded_window_rounds_and_clips():
    assert decoded_window((10, 21, 100, 50), 0.25, (200, 150)) == (2, 5, 26, 13)  # 2.5->2, 5.25->5, 27.5->28, 17.75->18
    assert decoded_window((0, 0, 800, 600), 0.125, (100, 75)) == (0, 0, 100, 75)
    assert decoded_window((799, 599, 1, 1), 0.125, (100, 75)) == (99, 74, 1, 1)  # never empty


def test_reduced_decoding_of_real_photos(real_jpegs):
    for path in sorted(real_jpegs, key=lambda p: p.stat().st_size)[:3]:
        data = path.read_bytes()
        full = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
        height, width = full.shape[:2]
        for num in (1, 2, 4, 8):
            dec = decode_image(data, num)
            assert dec.scale == num / 8 and (dec.width, dec.height) == (width, height)
            assert dec.image.shape == (math.ceil(height * num / 8), math.ceil(width * num / 8), 3)
            # the same picture, smaller: compare with block means of PIL's full decode
            k = 8 // num
            hh, ww = height // k * k, width // k * k
            means = full[:hh, :ww].reshape(hh // k, k, ww // k, k, 3).mean(axis=(1, 3))
            assert np.abs(dec.image[: hh // k, : ww // k] - means).mean() < 4.0


def test_decode_errors_are_typed(photo_bytes):
    rgb = Image.open(io.BytesIO(photo_bytes[0])).convert("RGB")
    _, bad = _odd_samples(photo_bytes[0])
    for sample in bad:
        data = sample.get("jpg", sample.get("png"))
        if data is None:
            continue
        with pytest.raises(DecodeError):
            decode_image(data, 1)
    cmyk = decode_image(_encode(rgb.convert("CMYK"), "JPEG"), 2)  # PIL fallback, DCT-scaled by draft()
    assert cmyk.scale == 0.25 and cmyk.image.shape == (math.ceil(rgb.height / 4), math.ceil(rgb.width / 4), 3)
    png = decode_image(_encode(rgb, "PNG"), 1)  # PNG has no reduced decoding
    assert png.scale == 1.0 and np.array_equal(png.image, np.asarray(rgb))


# --------------------------------------------------------------------------------------------
# Photometric
# --------------------------------------------------------------------------------------------


def test_draw_photometric_law():
    spec = Photometric((0.4, 0.3, 0.2, 0.1), jitter_p=0.8, gray_p=0.2, blur_p=0.5, solarize_p=0.1)
    rng = random.Random(0)
    n = 4000
    draws = [draw_photometric(spec, rng) for _ in range(n)]
    for name, p, got in [
        ("jitter", 0.8, sum(bool(d.jitter_order) for d in draws)),
        ("gray", 0.2, sum(d.gray for d in draws)),
        ("blur", 0.5, sum(d.blur_sigma > 0 for d in draws)),
        ("solarize", 0.1, sum(d.solarize for d in draws)),
    ]:
        assert abs(got / n - p) < 4 * math.sqrt(p * (1 - p) / n), name
    jittered = [d for d in draws if d.jitter_order]
    assert len({d.jitter_order for d in jittered}) == 24 and all(sorted(d.jitter_order) == [0, 1, 2, 3] for d in jittered)
    assert all(0.6 <= d.brightness <= 1.4 and 0.7 <= d.contrast <= 1.3 and 0.8 <= d.saturation <= 1.2 for d in jittered)
    assert all(-0.1 <= d.hue <= 0.1 for d in jittered)
    assert all(0.1 <= d.blur_sigma <= 2.0 for d in draws if d.blur_sigma > 0)
    assert draw_photometric(None, rng).is_identity
    # zero strength: torchvision leaves that op out
    d = draw_photometric(Photometric((0.4, 0.0, 0.0, 0.0), jitter_p=1.0), random.Random(1))
    assert d.jitter_order == (0,) and d.contrast == 1.0


def _photo(photo: bytes, size: tuple[int, int]) -> np.ndarray:
    """A real photo resized to ``size``, ``[H, W, 3]`` uint8."""
    return np.array(Image.open(io.BytesIO(photo)).convert("RGB").resize(size))


def _tv(ref01: torch.Tensor) -> np.ndarray:
    """torchvision float result (``[3, H, W]`` in [0, 1]) -> ``[H, W, 3]`` uint8, rounded."""
    return (ref01 * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _levels_apart(out: np.ndarray, ref: np.ndarray) -> int:
    return int(np.abs(out.astype(np.int32) - ref.astype(np.int32)).max())


def test_each_photometric_op_matches_torchvision_to_one_level(photo_bytes):
    """Every op alone against torchvision's float op (the semantics we promise), up to rounding."""
    x = _photo(photo_bytes[2], (64, 48))
    f = torch.from_numpy(x).permute(2, 0, 1).float() / 255

    def ours(**kw) -> np.ndarray:
        return apply_photometric(x, PhotometricParams(**kw))

    for b in (0.6, 1.4):
        assert _levels_apart(ours(jitter_order=(0,), brightness=b), _tv(TF.adjust_brightness(f, b))) <= 1
    for c in (0.6, 1.3):
        assert _levels_apart(ours(jitter_order=(1,), contrast=c), _tv(TF.adjust_contrast(f, c))) <= 1
    for sat in (0.0, 0.7, 1.6):
        assert _levels_apart(ours(jitter_order=(2,), saturation=sat), _tv(TF.adjust_saturation(f, sat))) <= 1
    for hue in (0.5, -0.5, 0.31, -0.07, 0.0):  # the whole hue circle, both directions
        assert _levels_apart(ours(jitter_order=(3,), hue=hue), _tv(TF.adjust_hue(f, hue))) <= 1, hue
    assert _levels_apart(ours(gray=True), _tv(TF.rgb_to_grayscale(f, num_output_channels=3))) <= 1
    for sigma in (0.3, 1.1, 2.0):
        radius = math.ceil(3 * sigma)
        assert _levels_apart(ours(blur_sigma=sigma), _tv(TF.gaussian_blur(f, [2 * radius + 1] * 2, [sigma, sigma]))) <= 1
    assert _levels_apart(ours(solarize=True), _tv(TF.solarize(f, 128 / 255))) == 0
    assert apply_photometric(x, PhotometricParams()) is x


def test_a_photometric_chain_is_torchvisions_with_uint8_rounding_between_ops(photo_bytes):
    """The drawn order is followed; rounding after each op (as PIL) keeps within two levels."""
    x = _photo(photo_bytes[5], (56, 72))
    params = PhotometricParams(
        jitter_order=(3, 1, 0, 2),
        brightness=1.3,
        contrast=0.7,
        saturation=1.2,
        hue=-0.08,
        gray=False,
        blur_sigma=0.9,
        solarize=True,
    )

    def rounded(t: torch.Tensor) -> torch.Tensor:
        return (t * 255).round().clamp(0, 255) / 255

    f = torch.from_numpy(x).permute(2, 0, 1).float() / 255
    f = rounded(TF.adjust_hue(f, -0.08))
    f = rounded(TF.adjust_contrast(f, 0.7))
    f = rounded(TF.adjust_brightness(f, 1.3))
    f = rounded(TF.adjust_saturation(f, 1.2))
    f = rounded(TF.gaussian_blur(f, [7, 7], [0.9, 0.9]))
    ref = _tv(TF.solarize(f, 128 / 255))
    out = apply_photometric(x, params)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert _levels_apart(out, ref) <= 2
    # another order gives another image (the order is really followed)
    swapped = apply_photometric(
        x,
        PhotometricParams(
            jitter_order=(0, 1, 2, 3), brightness=1.3, contrast=0.7, saturation=1.2, hue=-0.08, blur_sigma=0.9, solarize=True
        ),
    )
    assert _levels_apart(swapped, out) > 2


def test_blur_is_a_gaussian_of_the_drawn_sigma(photo_bytes):
    """Blur against a Gaussian written here from the definition (reflected borders, radius ceil(3 sigma))."""
    x = _photo(photo_bytes[3], (64, 64))
    img = x.astype(np.float64)

    def gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
        r = math.ceil(3 * sigma)
        k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
        k /= k.sum()
        pad = np.pad(a, ((r, r), (r, r), (0, 0)), mode="reflect")
        rows = sum(k[i] * pad[:, i : i + a.shape[1]] for i in range(2 * r + 1))
        return sum(k[i] * rows[i : i + a.shape[0]] for i in range(2 * r + 1))

    for sigma in (0.8, 2.0):
        out = apply_photometric(x, PhotometricParams(blur_sigma=sigma)).astype(np.float64)
        assert np.abs(out - np.round(gaussian(img, sigma))).max() <= 1
        assert np.abs(out - img).mean() > 1  # it did blur


def test_photometric_timing_command_prints_every_op(capsys, real_jpegs):  # real_jpegs: skip without photos
    from pipeline.bench_photometric import main

    main(["cpu", "--sizes", "32", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "32 px" in out and all(op in out for op in ("hue", "blur sigma 2.0", "solarize"))
