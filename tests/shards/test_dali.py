"""DALI's ``fn.readers.webdataset`` reads our shards through our index files, CPU only."""

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.shards.builders import bad_inputs, convert_class_folders, two_class_files

dali = pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (extra [dali])")


@pytest.fixture(scope="module")
def out(tmp_path_factory, small_jpegs, small_pngs):
    """Shards holding every kind of kept input: JPEG RGB/gray/CMYK/progressive, PNG, WebP."""
    root = tmp_path_factory.mktemp("dali")
    cases = bad_inputs(small_jpegs[0], small_pngs[0])
    files = two_class_files(small_jpegs[1:5])
    files.update({f"c1/{name}": data for name, (data, ext, _) in cases.items() if ext})
    m = convert_class_folders(root, files, max_count=3)
    assert m["totals"]["shards"] >= 3
    return root / "out"


def _reference(out: Path) -> dict[str, dict[str, bytes]]:
    """key -> {ext: bytes} read with tarfile, independently of our index."""
    samples: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted(out.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return samples


def test_dali_cpu_pipeline_reads_every_sample_through_the_index(out):
    from nvidia.dali import fn, pipeline_def, types

    tars = sorted(out.glob("*.tar"))
    reference = _reference(out)
    batch = 4

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def pipe():
        image, cls, meta = fn.readers.webdataset(
            paths=[str(p) for p in tars],
            index_paths=[str(p.with_suffix(".idx")) for p in tars],
            ext=["jpg;png;webp", "cls", "json"],
            missing_component_behavior="error",
            random_shuffle=False,
            name="reader",
            dtypes=[types.UINT8] * 3,
        )
        # DALI applies EXIF orientation by default; the geometry contract is about the stored
        # pixels (the .json records exif_orientation for whoever wants it), so turn that off
        decoded = fn.decoders.image(image, device="cpu", output_type=types.RGB, adjust_orientation=False)
        return image, cls, meta, decoded

    p = pipe()
    p.build()
    size = p.reader_meta("reader")["epoch_size"]
    assert size == len(reference)
    seen = {}
    for _ in range(-(-size // batch)):
        image, cls, meta, decoded = p.run()
        for i in range(batch):
            info = json.loads(np.array(meta[i]).tobytes())
            key = next(k for k, s in reference.items() if s["json"] == np.array(meta[i]).tobytes())
            if key in seen:  # the last batch is padded by repeating samples
                continue
            seen[key] = info
            ref = reference[key]
            ext = next(e for e in ("jpg", "png", "webp") if e in ref)
            assert np.array(image[i]).tobytes() == ref[ext]
            assert int(np.array(cls[i]).tobytes()) == int(ref["cls"])
            # every kept image decodes in DALI, at the size the .json records
            assert np.array(decoded[i]).shape == (info["height"], info["width"], 3), key
    assert len(seen) == len(reference)
