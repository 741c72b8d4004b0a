"""What the GPU check needs installed, read from the project's own ``pyproject.toml``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TORCH_FAMILY = {"torch", "torchvision", "torchaudio", "triton"}
# Used by entry points the check runs but not (or only indirectly) declared: psutil by
# pipeline.bench, timm by the ViT backbone of GTSA and DINO.
ALSO_NEEDED = ["psutil", "timm"]


def project_name(name: str) -> str:
    """PEP 503 normalised name: ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    """``kornia>=0.7`` -> ``kornia``."""
    return project_name(re.split(r"[<>=!~ \[;(]", req.strip(), maxsplit=1)[0])


def _pyproject(root: Path = ROOT) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the two lists this module reads, by pattern
        return _pyproject_lists((root / "pyproject.toml").read_text())
    with open(root / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _pyproject_lists(text: str) -> dict:
    """``project.dependencies`` and ``optional-dependencies.dali`` of a pyproject.toml text."""

    def strings(key: str) -> list[str]:
        m = re.search(rf"^{key}\s*=\s*\[(.*?)\]", text, re.S | re.M)
        return re.findall(r'"([^"]+)"', m.group(1)) if m else []

    return {"project": {"dependencies": strings("dependencies"), "optional-dependencies": {"dali": strings("dali")}}}


def base_requirements(root: Path = ROOT) -> list[str]:
    """The project's runtime requirements without the PyTorch family, plus :data:`ALSO_NEEDED`."""
    deps = [d for d in _pyproject(root)["project"]["dependencies"] if requirement_name(d) not in TORCH_FAMILY]
    have = {requirement_name(d) for d in deps}
    return deps + [a for a in ALSO_NEEDED if a not in have]


def dali_requirements(root: Path = ROOT) -> list[str]:
    """The ``dali`` extra (``nvidia-dali-cuda130``)."""
    return list(_pyproject(root)["project"]["optional-dependencies"]["dali"])
