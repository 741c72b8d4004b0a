"""The copy-paste evaluation set: seeded, occlusion-correct, and intact through the COCO converter."""

from __future__ import annotations

import json
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from shards.coco_masks import decode_rle, encode_rle, image_label, semantic_mask
from shards.convert import ConvertOptions
from shards.copy_paste import (
    Stamp,
    build,
    compose,
    iter_composites,
    jpeg_bytes,
    list_stamps,
    split_backgrounds,
    split_stamps,
    write_sources,
)
from shards.photos import TUXPAINT_STAMPS, available_photos, pool_photos

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


@pytest.fixture(scope="module")
def real_stamps() -> Path:
    if not TUXPAINT_STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default not installed: run `bash scripts/setup.sh` as root")
    return TUXPAINT_STAMPS


@pytest.fixture(scope="module")
def few_photos(real_jpegs: list[Path]) -> list[Path]:
    """8 small real photos: 6 of the pretraining pool (train backgrounds), 2 of the evaluation pool (test)."""

    def smallest(pool: str, n: int) -> list[Path]:
        in_pool = set(available_photos(pool=pool))
        return sorted((p for p in real_jpegs if p in in_pool), key=lambda p: (p.stat().st_size, p.name))[:n]

    return sorted(smallest("pretrain", 6) + smallest("eval", 2))


def _solid_stamps(root: Path) -> list[Stamp]:
    """One opaque disc per colour category (alpha 0 outside), so colour tells who is on top."""
    stamps = []
    yy, xx = np.mgrid[:64, :64]
    disc = ((xx - 31.5) ** 2 + (yy - 31.5) ** 2 < 30**2).astype(np.uint8) * 255
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        arr = np.zeros((64, 64, 4), np.uint8)
        arr[..., :3], arr[..., 3] = rgb, disc
        Image.fromarray(arr, "RGBA").save(root / name / "disc.png")
        stamps.append(Stamp(root / name / "disc.png", name))
    return stamps


def test_occlusion_order_is_respected(tmp_path):
    # Stamps pasted at their own size (64 px on 96: scale 2/3) keep a binary alpha, so every pixel
    # shows exactly the colour of the topmost disc covering it, or the grey background.
    stamps = _solid_stamps(tmp_path)
    ids = {name: k + 1 for k, name in enumerate(sorted(COLOURS))}
    colour_of = {ids[name]: rgb for name, rgb in COLOURS.items()}
    rng = random.Random(3)
    overlaps = 0
    for trial in range(10):
        chosen = [stamps[rng.randrange(3)] for _ in range(5)]
        comp = compose(np.full((96, 96, 3), 128, np.uint8), chosen, ids, random.Random(trial), scale=(2 / 3, 2 / 3))
        union = np.zeros((96, 96), bool)
        for mask, cat in zip(comp.masks, comp.categories):
            assert not (union & mask).any(), "visible masks overlap"
            union |= mask
            assert (comp.image[mask] == colour_of[cat]).all()
        assert (comp.image[~union] == 128).all()
        overlaps += len(comp.masks) < 5 or sum(m.sum() for m in comp.masks) < 5 * 2820
    assert overlaps >= 5  # the trials did exercise occlusion


def test_stamp_and_background_splits_are_disjoint(real_stamps, few_photos):
    stamps = list_stamps(real_stamps)
    assert all(s.path.suffix == ".png" for s in stamps)
    assert len({s.category for s in stamps}) >= 10
    split = split_stamps(stamps, seed=0)
    assert not {s.path for s in split["train"]} & {s.path for s in split["test"]}
    assert len(split["train"]) + len(split["test"]) == len(stamps)
    bgs = split_backgrounds(few_photos)
    assert len(bgs["train"]) == 6 and len(bgs["test"]) == 2
    pools = {p.path: (p.pool, p.group) for p in pool_photos()}
    assert {pools[p][0] for p in bgs["train"]} == {"pretrain"} and {pools[p][0] for p in bgs["test"]} == {"eval"}
    assert not {pools[p][1] for p in bgs["train"]} & {pools[p][1] for p in bgs["test"]}  # no scene group in both
    own = [Path(f"/elsewhere/{i}.jpg") for i in range(8)]  # photos the pools file does not list
    assert split_backgrounds(own)["test"] == [own[3], own[7]]


def test_the_set_is_identical_for_a_seed(tmp_path, real_stamps, few_photos):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    counts = {"train": 3, "test": 2}
    a = files(Path(write_sources(tmp_path / "a", counts, 64, 5, real_stamps, few_photos, False)["train"][0]).parent)
    b = files(Path(write_sources(tmp_path / "b", counts, 64, 5, real_stamps, few_photos, False)["train"][0]).parent)
    c = files(Path(write_sources(tmp_path / "c", counts, 64, 6, real_stamps, few_photos, False)["train"][0]).parent)
    assert len(a) == 2 * 5 + 2  # images + semantic PNGs + one instances JSON per split
    assert a == b
    assert a != c


def _read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """Samples of a shard with Python's tarfile (not the project's reader)."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, _, ext = m.name.partition(".")
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def test_masks_and_boxes_survive_the_shards(tmp_path, real_stamps, few_photos):
    manifest = build(
        tmp_path / "set",
        train=4,
        test=3,
        size=80,
        seed=1,
        options=ConvertOptions(seed=1, workers=1, progress=False),
        stamp_root=real_stamps,
        photos=few_photos,
    )
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 4, "test": 3}
    categories = sorted({s.category for s in list_stamps(real_stamps)})
    assert [c["name"] for c in manifest["categories"]] == categories
    ids = {name: k + 1 for k, name in enumerate(categories)}
    splits = split_stamps(list_stamps(real_stamps), 1)
    bgs = split_backgrounds(few_photos)
    for split, count in (("train", 4), ("test", 3)):
        expected = list(iter_composites(split, count, splits[split], bgs[split], ids, 80, 1))
        samples = {}
        for tar in sorted((tmp_path / "set").glob(f"{split}-*.tar")):
            samples.update(_read_tar(tar))
        assert len(samples) == count
        for i, comp in enumerate(expected):
            sample = samples[f"{split}_{i:06d}"]
            meta = json.loads(sample["json"])
            anns = meta["annotations"]
            assert len(anns) == len(comp.masks) >= 1
            for ann, mask, cat in zip(anns, comp.masks, comp.categories):
                rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
                decoded = mask_utils.decode(rle).astype(bool)
                assert np.array_equal(decoded, mask)
                ys, xs = np.nonzero(mask)
                assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert ann["area"] == mask.sum() and ann["category_id"] == cat
            assert sample["jpg"] == jpeg_bytes(comp.image)  # the converter keeps the bytes
            painted = np.zeros((80, 80), int)
            for mask, cat in zip(comp.masks, comp.categories):
                painted[mask] = cat
            assert np.array_equal(semantic_mask(anns, 80, 80), painted)
            src_png = tmp_path / "set" / "source" / f"{split}_semantic" / f"{split}_{i:06d}.png"
            assert np.array_equal(np.asarray(Image.open(src_png)), painted)


def test_rle_round_trip_and_image_label():
    rng = np.random.default_rng(0)
    mask = rng.random((17, 23)) > 0.6
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [17, 23]
    assert np.array_equal(decode_rle(json.loads(json.dumps(rle))), mask)
    anns = [{"category_id": 4, "area": 10}, {"category_id": 2, "area": 30}, {"category_id": 9, "area": 30}]
    assert image_label(anns) == 2  # the largest; the first of equals
    assert image_label([]) == 0


def test_cli_builds_train_and_test_shards(tmp_path, real_stamps, real_photos, capsys):
    from shards.__main__ import main

    out = tmp_path / "cp"
    assert main(["copy-paste", str(out), "--train", "2", "--test", "1", "--size", "48", "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "train: 2 images" in printed and "test: 1 images" in printed
    assert sorted(p.name for p in out.glob("*.tar")) == ["test-000000.tar", "train-000000.tar"]
    assert (out / "source" / "instances_train.json").is_file()
    assert main(["copy-paste", str(tmp_path / "bad"), "--size", "8"]) == 1


class _Centred:
    """An rng stand-in: every uniform draw at the middle of its range, no flip."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2

    def random(self) -> float:
        return 1.0


def test_a_pixel_belongs_to_an_object_where_its_alpha_is_at_least_one_half(tmp_path):
    # four bands of alpha 102, 127, 128, 153 (0.40, 0.498, 0.502, 0.60) in a 64-px stamp pasted
    # at its own size over the whole 64-px canvas: the visible mask is exactly the last two bands
    alpha = np.repeat(np.array([102, 127, 128, 153], np.uint8), 16)[None].repeat(64, 0)
    arr = np.zeros((64, 64, 4), np.uint8)
    arr[..., 0], arr[..., 3] = 255, alpha
    (tmp_path / "red").mkdir()
    Image.fromarray(arr, "RGBA").save(tmp_path / "red" / "bands.png")
    stamp = Stamp(tmp_path / "red" / "bands.png", "red")
    comp = compose(np.zeros((64, 64, 3), np.uint8), [stamp], {"red": 1}, _Centred(), scale=(1.0, 1.0))
    expected = np.zeros((64, 64), bool)
    expected[:, 32:] = True
    assert len(comp.masks) == 1 and np.array_equal(comp.masks[0], expected)
    np.testing.assert_array_equal(comp.image[0, ::16, 0], [102, 127, 128, 153])  # blended over black: alpha * 255
