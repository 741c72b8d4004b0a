"""The real photos this project installs for tests, benchmarks and the default job.

``real_photos.txt`` (beside this file) lists natural photos from Debian packages (opencv-doc,
mate-backgrounds) installed by ``scripts/setup.sh``; scikit-image's bundled photos are added when
the wheel is installed. Missing files are left out, so callers see what this machine really has.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

LIST_FILE = Path(__file__).with_name("real_photos.txt")
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "moon.png",
    "retina.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
)
TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
MISSING_HINT = "no real photos installed: run `bash scripts/setup.sh` (as root, for the Debian photo packages)"


def listed_photos() -> list[Path]:
    """Every photo path of real_photos.txt, whether installed or not."""
    lines = LIST_FILE.read_text().splitlines()
    return [Path(s.strip()) for s in lines if s.strip() and not s.lstrip().startswith("#")]


def skimage_photos() -> list[Path]:
    """The photos of ``SKIMAGE_PHOTOS`` in scikit-image's data folder (none without the wheel)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return []
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return [data / n for n in SKIMAGE_PHOTOS if (data / n).is_file()]


def available_photos(suffixes: tuple[str, ...] = (".jpg", ".jpeg", ".png")) -> list[Path]:
    """Installed real photos with one of ``suffixes``, sorted, without duplicates."""
    found = {p for p in listed_photos() + skimage_photos() if p.is_file()}
    return sorted(p for p in found if p.suffix.lower() in suffixes)
