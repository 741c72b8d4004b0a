"""Throughput plot from the JSON lines ``python -m pipeline.bench`` appends to ``runs/bench.jsonl``.

One horizontal bar per measured configuration (recipe, run label such as ``cpu``, ``reference``,
``decode-only`` or ``torch/decode=gpu``, mode and device), its length the median images/s of the
runs with that configuration, one dot per run.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from pipeline.pictures.figure import pyplot


@dataclass
class ThroughputRow:
    """Every run of one configuration."""

    recipe: str
    label: str  # what ran: backend (and decode), "reference" or "decode-only"
    mode: str  # e.g. "photometric off · uint8 · +M"
    device: str
    images_per_s: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        """Recipe, label, mode (when set) and device, joined by ``·``."""
        parts = [self.recipe, self.label] + ([self.mode] if self.mode else []) + [self.device]
        return " · ".join(parts)

    @property
    def median(self) -> float:
        """Median images/s over the runs."""
        return statistics.median(self.images_per_s)


def _mode(record: dict[str, Any]) -> str:
    mode = []
    if record.get("photometric") is False:
        mode.append("photometric off")
    if record.get("normalize") is False:
        mode.append("uint8")
    if record.get("with_m"):
        mode.append("+M")
    mode.append(f"batch {record['batch_size']}" if "batch_size" in record else "")
    return " · ".join(m for m in mode if m)


def _device(record: dict[str, Any]) -> str:
    device = str(record.get("device", "?"))
    if device.startswith("cuda") and record.get("gpu"):
        return f"on {record['gpu']}"
    return f"on cpu, {record['cpus']} cores" if device == "cpu" and "cpus" in record else f"on {device}"


def throughput_rows(records: list[dict[str, Any]], recipes: list[str] | None = None) -> list[ThroughputRow]:
    """Group bench records by configuration, sorted by recipe then median images/s (fastest first).

    Records without ``images_per_s`` (or of other ``recipes`` when given) are left out.
    """
    rows: dict[tuple[str, str, str, str], ThroughputRow] = {}
    for r in records:
        rate = r.get("images_per_s")
        recipe = str(r.get("recipe", "?"))
        if not isinstance(rate, (int, float)) or (recipes and recipe not in recipes):
            continue
        key = (recipe, str(r.get("label", r.get("backend", "?"))), _mode(r), _device(r))
        rows.setdefault(key, ThroughputRow(*key)).images_per_s.append(float(rate))
    return sorted(rows.values(), key=lambda row: (row.recipe, -row.median))


def throughput_figure(rows: list[ThroughputRow], title: str = "") -> Any:
    """Horizontal bars (median images/s per configuration), a dot per run, the median written out."""
    if not rows:
        raise ValueError("no bench records with images_per_s: run `python -m pipeline.bench ...` first")
    plt = pyplot()
    labels = sorted({row.label for row in rows})
    colours = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(labels)}
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    ys = list(range(len(rows)))[::-1]  # first row at the top
    top = max(max(row.images_per_s) for row in rows)
    for y, row in zip(ys, rows):
        ax.barh(y, row.median, color=colours[row.label], alpha=0.8, height=0.7)
        ax.plot(row.images_per_s, [y] * len(row.images_per_s), "k.", markersize=4)
        runs = f" ({len(row.images_per_s)} runs)" if len(row.images_per_s) > 1 else ""
        ax.text(row.median + 0.01 * top, y, f"{row.median:,.0f}{runs}", va="center", fontsize=8)
    ax.set_yticks(ys, [row.name for row in rows], fontsize=8)
    ax.set_xlabel("images/s (median of runs; dots: single runs)")
    ax.set_xlim(0, top * 1.18)
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[lab], alpha=0.8) for lab in labels]
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="run", title_fontsize=8)
    ax.set_title(title or "loader throughput (python -m pipeline.bench)", fontsize=10)
    return fig
