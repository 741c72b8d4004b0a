"""Helpers shared by the pipeline tests: small real-photo JPEGs, shards written with
webdataset.TarWriter, a tiny loader config, a backend's test config, a hang guard, damaged JPEGs."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import webdataset as wds
from PIL import Image

from pipeline.config import LoaderConfig, plain_config

TIMEOUT_S = 60


def small_jpegs(photos: list[Path], count: int, max_side: int = 96) -> list[bytes]:
    """``count`` small JPEGs re-encoded from real photos (varied sizes, so crops vary)."""
    out = []
    for i in range(count):
        im = Image.open(photos[i % len(photos)])
        side = max_side - 8 * (i % 4)
        im.draft("RGB", (side, side))
        im = im.convert("RGB")
        im.thumbnail((side, side))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def colour_photo_arrays(photos: list[Path], count: int, size: tuple[int, int] = (32, 24)) -> list[np.ndarray]:
    """The first ``count`` photos with real colour (mean channel spread of at least 20 levels), as
    ``size`` RGB arrays: colour ops leave a grey photo unchanged, and which photos come first
    depends on where scikit-image's are installed."""
    out = []
    for path in photos:
        with Image.open(path) as im:
            im.draft("RGB", (4 * size[0], 4 * size[1]))  # DCT-scaled decode of the big JPEGs
            arr = np.array(im.convert("RGB").resize(size, Image.BILINEAR))
        if (arr.max(-1).astype(np.int64) - arr.min(-1)).mean() >= 20:
            out.append(arr)
            if len(out) == count:
                return out
    pytest.skip(f"fewer than {count} colour photos installed")


def write_shards(directory: Path, images: list[bytes], n_shards: int, prefix: str = "train") -> list[str]:
    """Round-robin ``images`` into ``n_shards`` tar files; keys ``s{shard}_{index}``, labels index % 10."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = []
    writers = [wds.TarWriter(str(directory / f"{prefix}-{s:06d}.tar")) for s in range(n_shards)]
    for i, data in enumerate(images):
        key = f"s{i % n_shards}_{i:04d}"
        writers[i % n_shards].write({"__key__": key, "jpg": data, "cls": str(i % 10)})
        keys.append(key)
    for w in writers:
        w.close()
    return keys


def tiny_config(shards: str, **kw) -> LoaderConfig:
    """Two 32 px views, no photometrics: streaming tests care about which samples, not pixels."""
    fields = dict(recipe="two-view", global_size=32, batch_size=4, num_workers=2, shuffle_buffer=8)
    return plain_config(shards, **{**fields, **kw})


def backend_config(shards: str, backend: str, /, **fields) -> LoaderConfig:
    """A ``backend`` config of ``shards``: CLoVE's views with 2 local ones, ``fields`` over them; recipe
    two-view (it has no local views) gets ``num_local=None`` unless ``fields`` set it."""
    num_local = fields.pop("num_local", None if fields.get("recipe") == "two-view" else 2)
    return LoaderConfig(**{"shards": shards, "backend": backend, "recipe": "clove", **fields, "num_local": num_local})


def run_with_timeout(fn, seconds: float = TIMEOUT_S):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return in time."""
    result, error = [], []

    def target():
        try:
            result.append(fn())
        except BaseException as e:  # re-raised below in the test's thread
            error.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"loader did not finish within {seconds} s (hang)"
    if error:
        raise error[0]
    return result[0]


def zero_mid_scan(data: bytes, count: int = 2000) -> bytes:
    """The JPEG with ``count`` bytes zeroed in the middle of its entropy-coded data."""
    start = data.rfind(b"\xff\xda")  # last scan header; its data follows
    middle = (start + data.rfind(b"\xff\xd9")) // 2
    return data[: middle - count // 2] + bytes(count) + data[middle + count // 2 :]


def strict_refuses_lenient_reads(data: bytes) -> bool:
    """libjpeg-turbo in strict mode refuses the bytes, PIL's lenient decoder reads them."""
    try:
        simplejpeg.decode_jpeg(data, strict=True)
        return False
    except ValueError:
        pass
    with Image.open(io.BytesIO(data)) as im:
        im.load()
    return True
