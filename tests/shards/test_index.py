"""DALI index files: same text as NVIDIA's wds2idx, offsets that really point at the data."""

import importlib.util
import io
import tarfile
from pathlib import Path

import pytest

from shards.index import read_index, sample_extensions, write_index
from tests.shards.builders import convert_class_folders, two_class_files


@pytest.fixture(scope="module")
def out(tmp_path_factory, small_jpegs, small_pngs):
    root = tmp_path_factory.mktemp("index")
    convert_class_folders(root, {**two_class_files(small_jpegs[:6]), "c0/photo.png": small_pngs[0].read_bytes()}, max_count=3)
    return root / "out"


def test_index_offsets_point_at_each_members_bytes(out):
    for idx in sorted(out.glob("*.idx")):
        tar_path = idx.with_suffix(".tar")
        raw = tar_path.read_bytes()
        with tarfile.open(tar_path) as tar:
            by_name = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        listed = [m for sample in read_index(idx) for m in sample]
        assert [m.name for m in listed] == list(by_name)  # every member, in tar order
        for m in listed:
            assert raw[m.offset : m.offset + m.size] == by_name[m.name]


@pytest.mark.skipif(
    importlib.util.find_spec("wds2idx") is None, reason="NVIDIA's wds2idx (shipped with nvidia-dali) is not installed"
)
def test_index_text_equals_nvidia_wds2idx(out, tmp_path):
    from wds2idx import IndexCreator

    for idx in sorted(out.glob("*.idx")):
        theirs = tmp_path / idx.name
        with IndexCreator(str(idx.with_suffix(".tar")), str(theirs), verbose=False) as creator:
            creator.create_index()
        assert theirs.read_text() == idx.read_text()


def test_write_index_of_a_foreign_tar(tmp_path, small_jpegs):
    """write_index(tar, idx) works on tars written by someone else (here: Python's tarfile)."""
    tar_path = tmp_path / "other.tar"
    payloads = {"a.jpg": small_jpegs[0].read_bytes(), "a.txt": b"caption", "b.jpg": b"x" * 1000}
    with tarfile.open(tar_path, "w") as tar:
        for name, data in payloads.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert write_index(tar_path, tmp_path / "other.idx") == 2
    samples = read_index(tmp_path / "other.idx")
    assert [[m.name for m in s] for s in samples] == [["a.jpg", "a.txt"], ["b.jpg"]]
    raw = tar_path.read_bytes()
    for m in (m for s in samples for m in s):
        assert raw[m.offset : m.offset + m.size] == payloads[m.name]


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty index"),
        ("v1.1 1\njpg 512 10 a.jpg\n", "bad header"),
        ("v1.2 2\njpg 512 10 a.jpg\n", "header says 2 samples, found 1"),
        ("v1.2 1\njpg 512 10\n", "groups of"),
        ("v1.2 1\npng 512 10 a.jpg\n", "malformed entry"),
    ],
)
def test_malformed_index_is_rejected_with_a_reason(text, reason, tmp_path: Path):
    path = tmp_path / "x.idx"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason):
        read_index(path)


def test_sample_extensions_are_read_indexs_without_the_objects(out, tmp_path: Path):
    for idx in sorted(out.glob("*.idx")):
        assert sample_extensions(idx) == [{m.ext.lower() for m in sample} for sample in read_index(idx)]
    for text in ("", "v1.1 1\njpg 512 10 a.jpg\n", "v1.2 2\njpg 512 10 a.jpg\n"):
        path = tmp_path / "x.idx"
        path.write_text(text)
        with pytest.raises(ValueError, match="malformed DALI index"):
            sample_extensions(path)
