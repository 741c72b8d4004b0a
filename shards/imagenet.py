"""Source for ``python -m shards imagenet``: the ILSVRC-2012 classification layout.

Accepted layouts under SRC (or under ``SRC/ILSVRC/Data/CLS-LOC``, Kaggle's copy):

- ``train/<wnid>/*.JPEG`` - the class is the folder;
- ``val/<wnid>/*.JPEG`` - per-class validation folders; or
- ``val/*.JPEG`` flat, labelled by either the devkit (``ILSVRC2012_devkit_t12/data/`` with
  ``ILSVRC2012_validation_ground_truth.txt`` and ``meta.mat``; reading ``meta.mat`` needs scipy)
  or a labels file (Kaggle's ``LOC_val_solution.csv``, or lines ``<file name> <wnid>``).

Class indices are the positions of the sorted wnids (those of ``train/`` when present), as every
ImageNet tool does. The devkit's own ILSVRC2012_IDs are *not* in wnid order: they are mapped to
wnids through ``meta.mat``, never used as class indices.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from shards.convert import Source
from shards.folder import list_images, stat_item
from shards.plan import UNKNOWN_CLASS, UNLABELED, Item, Skip, dedupe_keys, sanitize_key

DEVKIT = "ILSVRC2012_devkit_t12"


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def find_root(src: Path) -> Path:
    """The folder holding ``train/`` and/or ``val/`` (``src`` or its ``ILSVRC/Data/CLS-LOC``).

    FileNotFoundError when there is neither, or when ``train/`` still holds per-class ``.tar``
    archives.
    """
    kaggle = src / "ILSVRC" / "Data" / "CLS-LOC"
    root = kaggle if kaggle.is_dir() else src
    if not (root / "train").is_dir() and not (root / "val").is_dir():
        raise FileNotFoundError(f"{src}: no train/ or val/ folder (expected the ILSVRC-2012 layout)")
    train = root / "train"
    if train.is_dir() and not _class_dirs(train) and any(train.glob("*.tar")):
        raise FileNotFoundError(f"{train} holds per-class .tar archives: extract each into train/<wnid>/ first")
    return root


def devkit_labels(devkit: Path) -> dict[int, str]:
    """Validation image number (1-based) -> wnid, from the ILSVRC-2012 devkit."""
    data = devkit / "data" if (devkit / "data").is_dir() else devkit
    truth, meta = data / "ILSVRC2012_validation_ground_truth.txt", data / "meta.mat"
    for p in (truth, meta):
        if not p.is_file():
            raise FileNotFoundError(f"devkit file missing: {p}")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise RuntimeError(
            "reading the devkit's meta.mat needs scipy (pip install scipy), or pass --val-labels with LOC_val_solution.csv"
        ) from None
    synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    ids = [int(line) for line in truth.read_text().split()]
    return {number: id_to_wnid[i] for number, i in enumerate(ids, start=1)}


def file_labels(path: Path) -> dict[str, str]:
    """Image stem -> wnid from Kaggle's ``LOC_val_solution.csv`` or ``<name> <wnid>`` lines."""
    labels: dict[str, str] = {}
    text = path.read_text()
    if text.startswith("ImageId,"):
        for row in csv.DictReader(text.splitlines()):
            labels[row["ImageId"]] = row["PredictionString"].split()[0]
    else:
        for line in text.splitlines():
            words = line.replace(",", " ").split()
            if len(words) >= 2 and not line.lstrip().startswith("#"):
                labels[Path(words[0]).stem] = words[1]
    if not labels:
        raise ValueError(f"{path}: no labels found (expected LOC_val_solution.csv or '<name> <wnid>' lines)")
    return labels


def _flat_val_labels(src: Path, root: Path, devkit: Path | None, val_labels: Path | None) -> tuple[dict[str, str], dict]:
    """Stem -> wnid for a flat val/ and a description of where the labels came from."""
    if val_labels is not None:
        return file_labels(val_labels), {"val_labels": str(val_labels.resolve())}
    candidates = [devkit] if devkit is not None else [src / DEVKIT, root / DEVKIT, src.parent / DEVKIT]
    for d in candidates:
        if d is not None and d.is_dir():
            by_number = devkit_labels(d)
            return ({f"ILSVRC2012_val_{n:08d}": w for n, w in by_number.items()}, {"devkit": str(d.resolve())})
    for csv_path in (src / "LOC_val_solution.csv", root / "LOC_val_solution.csv"):
        if csv_path.is_file():
            return file_labels(csv_path), {"val_labels": str(csv_path.resolve())}
    raise FileNotFoundError(
        f"{root / 'val'} is flat: pass --devkit DIR ({DEVKIT}) or --val-labels FILE (LOC_val_solution.csv) for its classes"
    )


def scan_imagenet(
    src: str | os.PathLike, *, devkit: str | os.PathLike | None = None, val_labels: str | os.PathLike | None = None
) -> Source:
    """List ILSVRC-2012 train and val as splits ``train`` and ``val``."""
    src_path = Path(src).resolve()
    root = find_root(src_path)
    info: dict = {"root": str(root)}
    skipped: list[Skip] = []
    train, val = root / "train", root / "val"
    val_per_class = val.is_dir() and bool(_class_dirs(val))
    if train.is_dir():
        classes = _class_dirs(train)
    elif val_per_class:
        classes = _class_dirs(val)
    else:
        classes = []  # only a flat val: classes come from its labels below

    labels: dict[str, str] = {}
    if val.is_dir() and not val_per_class:
        labels, where = _flat_val_labels(
            src_path, root, Path(devkit) if devkit else None, Path(val_labels) if val_labels else None
        )
        info.update(where)
        if not classes:
            classes = sorted(set(labels.values()))
    class_index = {w: i for i, w in enumerate(classes)}

    splits: dict[str, list[Item]] = {}
    for split, folder in (("train", train), ("val", val)):
        if not folder.is_dir():
            continue
        items: list[Item] = []
        paths, ignored = list_images(folder)
        info[f"{split}_ignored_files"] = ignored
        for path in paths:
            rel = path.relative_to(root).as_posix()
            inner = path.relative_to(folder).parts
            if len(inner) > 1:
                wnid = inner[0]
            else:
                wnid = labels.get(path.stem) or labels.get(path.name)
                if wnid is None:
                    skipped.append(Skip(rel, UNLABELED, "no ground-truth label for this file", split))
                    continue
            if wnid not in class_index:
                skipped.append(Skip(rel, UNKNOWN_CLASS, f"wnid {wnid} is not a train class", split))
                continue
            item = stat_item(
                path,
                sanitize_key(path.stem),
                split,
                skipped,
                cls=class_index[wnid],
                meta={"wnid": wnid, "source": rel},
                source=rel,
            )
            if item is not None:
                items.append(item)
        dedupe_keys(items)
        splits[split] = items
    return Source("imagenet", splits, skipped, classes, info)
