"""Shards that timm's WebDataset reader reads as they are, thanks to the ``_info.json`` beside them.

Before: ``timm.data.create_dataset("wds/NAME", root=OUT, split="train")`` stopped with "split
train not found" on our shards.
"""

from collections import Counter

import pytest

from tests.shards.builders import convert_class_folders, pil_size

timm_data = pytest.importorskip("timm.data", reason="timm is a dev dependency: pip install timm")


def test_timm_reads_a_labelled_folder_conversion_with_counts_and_labels(tmp_path, small_jpegs, small_pngs):
    classes = ["cat", "dog", "emu"]  # sorted folder names: class index = position, as ImageFolder
    files = {f"{classes[i % 3]}/img{i:02d}.jpg": p.read_bytes() for i, p in enumerate(small_jpegs[:10])}
    files["emu/photo.png"] = small_pngs[0].read_bytes()
    convert_class_folders(tmp_path, files, max_count=4)  # 3 shards: several filenames
    out = tmp_path / "out"

    ds = timm_data.create_dataset("wds/photos", root=str(out), split="train")
    assert len(ds.reader.split_info.filenames) == 3 and ds.reader.num_samples == len(files)
    got = [(target, image.size) for image, target in ds]
    expected = [(classes.index(rel.split("/")[0]), pil_size(data)) for rel, data in files.items()]
    assert Counter(got) == Counter(expected)
