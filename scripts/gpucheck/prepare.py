"""``--prepare DIR``: on a machine with the package registries, download every wheel a GPU machine
without network needs (beyond PyTorch), pack the real photos, and cut it all into trips.

Groups, packed in this order so that the first trips carry what most of the plan needs:

- ``base``: the project's runtime dependencies that the GPU image lacks (webdataset, kornia,
  simplejpeg and what they need), without PyTorch itself;
- ``photos``: the real photos as one tar, for the benchmark shards;
- ``dali``: ``nvidia-dali-cuda130`` and its libraries (~270 MB);
- ``spare``: packages the GPU image already had when last seen (numpy, OpenCV, accelerate, timm, ...),
  brought along only in case a machine lacks them; their trips can stay behind.

Packages that depend on torch (kornia, accelerate, timm) are downloaded without their
dependencies, and their other requirements are read from the wheel's metadata and downloaded
with theirs: pip would otherwise fetch a whole PyTorch.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from gpucheck.requirements import TORCH_FAMILY, base_requirements, dali_requirements, project_name, requirement_name

log = logging.getLogger(__name__)

NEEDS_TORCH = {"kornia", "accelerate", "timm"}
# On the GPU image ('cuda', pip list as read in 2026-11; see the device notes): brought only in case.
SPARE = {
    "numpy",
    "pillow",
    "pyyaml",
    "packaging",
    "six",
    "typing-extensions",
    "psutil",
    "tqdm",
    "accelerate",
    "timm",
    "opencv-python-headless",
    "huggingface-hub",
    "safetensors",
    "filelock",
    "fsspec",
    "requests",
    "certifi",
    "charset-normalizer",
    "idna",
    "urllib3",
    "hf-xet",
    "wheel",
    "jinja2",
    "markupsafe",
    "networkx",
    "sympy",
    "mpmath",
    "click",
    "typer",
    "rich",
    "shellingham",
    "markdown-it-py",
    "mdurl",
    "pygments",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "sniffio",
    "annotated-doc",
}
GROUP_ORDER = ("base", "photos", "dali", "spare")


def platform_args(python_version: str, glibc_minor: int) -> list[str]:
    """pip download flags for CPython ``python_version`` on x86-64 Linux with glibc 2.``glibc_minor``
    (pip matches manylinux tags exactly, so every compatible tag is listed)."""
    tags = [f"manylinux_2_{n}_x86_64" for n in range(glibc_minor, 16, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
    args = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for t in tags:
        args += ["--platform", t]
    return args


def wheel_project(path: Path) -> str:
    """Normalised project name of a wheel file: ``Foo_Bar-1.0-py3-none-any.whl`` -> ``foo-bar``."""
    return project_name(path.name.split("-")[0])


def wheel_requirements(wheel: Path, python_version: str) -> list[str]:
    """The wheel's ``Requires-Dist`` lines that apply on CPython ``python_version``/Linux without extras."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    env = {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    out = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(env):
                out.append(str(req).split(";")[0].strip())
    return out


def pip_download(reqs: Iterable[str], dest: Path, flags: list[str], no_deps: bool = False) -> None:
    """One ``pip download`` into ``dest``; raises with pip's last lines when it fails."""
    reqs = list(reqs)
    if not reqs:
        return
    cmd = [sys.executable, "-m", "pip", "download", "-q", "-d", str(dest), *flags, *(["--no-deps"] if no_deps else []), *reqs]
    log.info("pip download %s%s", " ".join(reqs), " (no deps)" if no_deps else "")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])
        raise RuntimeError(f"pip download failed for {' '.join(reqs)}:\n{tail}")


def download_group(reqs: list[str], dest: Path, flags: list[str], python_version: str) -> None:
    """Download ``reqs`` and their dependencies into ``dest``, never PyTorch (see module doc)."""
    dest.mkdir(parents=True, exist_ok=True)
    names = {requirement_name(r): r for r in reqs}
    torchy = [r for n, r in names.items() if n in NEEDS_TORCH]
    plain = [r for n, r in names.items() if n not in NEEDS_TORCH and n not in TORCH_FAMILY]
    pip_download(torchy, dest, flags, no_deps=True)
    for r in torchy:  # their other requirements, with dependencies
        name = requirement_name(r)
        wheel = next(w for w in dest.glob("*.whl") if wheel_project(w) == name)
        for dep in wheel_requirements(wheel, python_version):
            dep_name = requirement_name(dep)
            if dep_name not in TORCH_FAMILY and dep_name not in NEEDS_TORCH:
                plain.append(dep)
    pip_download(plain, dest, flags)
    for w in dest.glob("*.whl"):  # a safety net: nothing of the PyTorch family travels
        if wheel_project(w) in TORCH_FAMILY or wheel_project(w).startswith("nvidia-cu"):
            log.warning("dropping %s (PyTorch's own; the GPU machine has it)", w.name)
            w.unlink()


def pack_photos(photos: list[Path], out: Path) -> Path:
    """One uncompressed tar of the photos (JPEGs are compressed already), names made unique."""
    with tarfile.open(out, "w") as tar:
        for i, p in enumerate(photos):
            tar.add(p, arcname=f"{i:03d}-{p.name}")
    return out


def collect_photos(extra_dir: Path | None) -> list[Path]:
    """The installed real photos plus the JPEG/PNG files of ``extra_dir``."""
    from shards.photos import available_photos

    photos = list(available_photos())
    if extra_dir is not None:
        photos += sorted(p for p in Path(extra_dir).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return photos


def grouped_files(work: Path) -> list[tuple[Path, str]]:
    """Every downloaded wheel and the photo tar with its group, in packing order, one file per name."""
    chosen: dict[str, tuple[Path, str]] = {}
    for group in GROUP_ORDER:
        folder = work / group
        for f in sorted(folder.glob("*")) if folder.is_dir() else []:
            g = "spare" if f.suffix == ".whl" and wheel_project(f) in SPARE else group
            chosen.setdefault(f.name, (f, g))
    return sorted(chosen.values(), key=lambda fg: (GROUP_ORDER.index(fg[1]), -fg[0].stat().st_size))


def prepare(
    dest: Path,
    python_version: str = "3.12",
    glibc_minor: int = 39,
    photos_dir: Path | None = None,
    trip_mb: int = 60,
    with_dali: bool = True,
) -> dict:
    """Download, pack and cut (see module doc) into ``dest/trip-NN/``; returns the manifest."""
    from gpucheck.transfer import MB, cut_into_trips

    work = dest / "downloads"
    flags = platform_args(python_version, glibc_minor)
    download_group(base_requirements(), work / "base", flags, python_version)
    if with_dali:
        download_group(dali_requirements(), work / "dali", flags, python_version)
    photos = collect_photos(photos_dir)
    if photos:
        (work / "photos").mkdir(parents=True, exist_ok=True)
        pack_photos(photos, work / "photos" / "photos.tar")
    else:
        log.warning("no real photos here: the GPU machine will build its shards from --photos or scikit-image's")
    shutil.rmtree(dest / "trips", ignore_errors=True)  # no piece of an earlier preparation stays
    return cut_into_trips(grouped_files(work), dest / "trips", trip_mb * MB)
