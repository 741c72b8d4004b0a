"""The real photos this project installs, split into a pretraining pool and an evaluation pool.

``photo_pools.tsv`` (beside this file) lists natural photos from Debian packages (opencv-doc,
mate-backgrounds, tuxpaint-data's templates; installed by ``scripts/setup.sh``) and from the
scikit-image wheel, each with its pool and scene group:

- ``pretrain``: what ``python -m shards photos`` converts and every pretraining preset reads;
- ``eval``: what the dense evaluation reads (correspondence photos, copy-paste test backgrounds).

Near-duplicate shots share a scene group and a group lies in one pool only, so no evaluation
photo has a near-identical twin that pretraining saw. Missing files are left out, so callers see
what this machine really has.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

POOLS_FILE = Path(__file__).with_name("photo_pools.tsv")
POOLS = ("pretrain", "eval")
SKIMAGE_PREFIX = "skimage:"
TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
MISSING_HINT = "no real photos installed: run `bash scripts/setup.sh` (as root, for the Debian photo packages)"


@dataclass(frozen=True)
class PoolPhoto:
    """One line of ``photo_pools.tsv``: the photo's path on this machine, its pool and scene group."""

    path: Path
    pool: str
    group: str


def skimage_data_dir() -> Path | None:
    """scikit-image's data folder, or None without the wheel."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def pool_photos() -> list[PoolPhoto]:
    """Every line of ``photo_pools.tsv``, installed or not (``skimage:`` names resolved when the wheel is there)."""
    skimage = skimage_data_dir()
    out = []
    for number, line in enumerate(POOLS_FILE.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        pool, group, path = line.split("\t")
        if pool not in POOLS:
            raise ValueError(f"{POOLS_FILE}:{number}: pool {pool!r} is not one of {POOLS}")
        if path.startswith(SKIMAGE_PREFIX):
            if skimage is None:
                continue
            path = str(skimage / path.removeprefix(SKIMAGE_PREFIX))
        out.append(PoolPhoto(Path(path), pool, group))
    return out


def available_photos(suffixes: tuple[str, ...] = (".jpg", ".jpeg", ".png"), pool: str | None = None) -> list[Path]:
    """Installed real photos with one of ``suffixes``, of ``pool`` (None: both pools), sorted."""
    if pool is not None and pool not in POOLS:
        raise ValueError(f"unknown photo pool {pool!r}; choose one of {POOLS}")
    listed = [p.path for p in pool_photos() if pool is None or p.pool == pool]
    return sorted({p for p in listed if p.is_file() and p.suffix.lower() in suffixes})


def scene_groups() -> dict[Path, str]:
    """``{path: scene group}`` of every listed photo."""
    return {p.path: p.group for p in pool_photos()}
