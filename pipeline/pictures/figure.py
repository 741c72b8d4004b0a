"""matplotlib for files only: the Agg backend (no display), and a one-line error when it is missing."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

MISSING = "pictures need matplotlib: pip install 'densessl[plots]' (or matplotlib>=3.7)"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (safe on machines without a display)."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(MISSING) from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100, palette: bool = False) -> Path:
    """Write ``fig`` as PNG at ``path`` (folders created), close it, and return the path.

    ``palette``: 256 adaptive colours instead of true colour, 3-5x smaller files of photos (for docs).
    """
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette:
        from PIL import Image

        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, bbox_inches="tight", format="png")
        image = Image.open(buf).convert("RGB")
        image.quantize(256, method=Image.Quantize.FASTOCTREE).save(path, format="PNG", optimize=True)
    else:
        fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def write_figure_command(draw: Callable[[], Any], out: str | Path, dpi: int = 100, palette: bool = False) -> int:
    """What a picture command does at its end: draw, save, print ``wrote PATH (N kB)``; a
    missing input or a bad value prints one ``error:`` line instead. Returns the exit status."""
    try:
        path = save_figure(draw(), out, dpi=dpi, palette=palette)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return 0
