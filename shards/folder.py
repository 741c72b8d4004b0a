"""Sources for ``python -m shards folder`` (any image folder) and ``photos`` (the installed photos).

A folder is walked recursively; files with an image-like suffix are candidates (their real
format is decided from their bytes later), other files are ignored and counted. With
``--classes-from-dirs`` the class is the first folder below SRC, as in torchvision's
``ImageFolder``: ``SRC/cat/a.jpg`` and ``SRC/cat/more/b.jpg`` are both ``cat``.
"""

from __future__ import annotations

import os
from pathlib import Path

from shards.convert import Source
from shards.plan import MISSING, NO_CLASS, Item, Skip, dedupe_keys, sanitize_key
from shards.source_file import NOT_REGULAR, not_regular

# Candidates by name; formats we do not keep (gif, bmp, tiff) are skipped and counted by the
# probe, so that the manifest tells the user they were there.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def list_images(root: Path) -> tuple[list[Path], int]:
    """Image-like files under ``root`` (sorted, hidden entries left out) and the ignored count."""
    found: list[Path] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(dirpath) / name)
            else:
                ignored += 1
    return sorted(found), ignored


def stat_item(
    path: Path,
    key: str,
    split: str,
    skipped: list[Skip],
    *,
    cls: int | None = None,
    meta: dict | None = None,
    source: str | None = None,
) -> Item | None:
    """An :class:`Item` for an existing regular file; otherwise a skip: ``missing`` (broken
    link, vanished) or ``not-a-regular-file`` (named pipe, device, socket, folder named like an
    image; symlinks are followed). The writer checks the opened file again (it may change)."""
    try:
        why = not_regular(path)
        size = path.stat().st_size
    except OSError as exc:
        skipped.append(Skip(source or str(path), MISSING, exc.strerror or str(exc), split))
        return None
    if why is not None:
        skipped.append(Skip(source or str(path), NOT_REGULAR, why, split))
        return None
    return Item(key=key, path=str(path), size=size, cls=cls, meta=meta or {})


def scan_folder(src: str | os.PathLike, *, split: str = "train", classes_from_dirs: bool = False) -> Source:
    """List an image folder as one split; classes from the first-level folders when asked."""
    root = Path(src).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{src} is not a folder")
    paths, ignored = list_images(root)
    skipped: list[Skip] = []
    classes = None
    if classes_from_dirs:
        classes = sorted({p.relative_to(root).parts[0] for p in paths if len(p.relative_to(root).parts) > 1})
    class_index = {name: i for i, name in enumerate(classes or [])}
    items: list[Item] = []
    for path in paths:
        rel = path.relative_to(root)
        meta = {"source": rel.as_posix()}
        cls = None
        if classes_from_dirs:
            if len(rel.parts) < 2:
                skipped.append(
                    Skip(rel.as_posix(), NO_CLASS, "file directly under SRC; --classes-from-dirs expects SRC/<class>/...", split)
                )
                continue
            meta["class"] = rel.parts[0]
            cls = class_index[rel.parts[0]]
        # The key keeps the folders (a/img.jpg and b/img.jpg stay distinct) without the suffix.
        key = sanitize_key(rel.with_suffix("").as_posix().replace("/", "__"))
        item = stat_item(path, key, split, skipped, cls=cls, meta=meta, source=rel.as_posix())
        if item is not None:
            items.append(item)
    dedupe_keys(items)
    info = {"root": str(root), "split": split, "classes_from_dirs": classes_from_dirs, "ignored_files": ignored}
    return Source("folder", {split: items}, skipped, classes, info)


def scan_photos(paths: list[Path] | None = None, *, split: str = "train") -> Source:
    """The pretraining pool of the real photos installed on this machine (``shards.photos``) as one
    folder dataset; the evaluation pool is never converted for pretraining."""
    from shards.photos import MISSING_HINT, available_photos

    paths = sorted(available_photos(pool="pretrain") if paths is None else paths)
    if not paths:
        raise FileNotFoundError(MISSING_HINT)
    skipped: list[Skip] = []
    items = []
    for path in paths:
        item = stat_item(path, sanitize_key(path.stem), split, skipped, meta={"source": str(path)})
        if item is not None:
            items.append(item)
    dedupe_keys(items)
    return Source("photos", {split: items}, skipped, None, {"root": "shards.photos", "pool": "pretrain", "split": split})
