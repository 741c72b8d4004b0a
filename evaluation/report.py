"""The evaluation's rows, table and JSON lines: mean ± SD per row, no-information scores, paired
differences against baseline rows, and the leakage column."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from evaluation.leakage import Leakage
from evaluation.stats import Metric, mean_sd, paired_difference

LAYER_ORDER = ("layer1", "layer2", "layer3", "layer4")
METRIC_ORDER = ("fg", "bf", "knn", "corr")


@dataclass
class Row:
    """One table row: the counts of its replicates (``{key: [R, C, K]}``), where they came from,
    and whether its BatchNorm statistics are as exported or re-estimated."""

    group: str
    bn: str = "exported"
    counts: dict[str, list[Tensor]] = field(default_factory=dict)
    info: list[dict] = field(default_factory=list)
    leakage: list[Leakage] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def label(self) -> str:
        """The row's name in the table."""
        return self.group + (" [BN re-estimated]" if self.bn == "re-estimated" else "")

    def add(self, counts: dict[str, Tensor], info: dict, leakage: Leakage, seconds: float) -> None:
        """One more replicate."""
        for key, c in counts.items():
            self.counts.setdefault(key, []).append(c)
        self.info.append(info)
        self.leakage.append(leakage)
        self.seconds += seconds

    def sums(self, key: str) -> Tensor:
        """``[R, C, K]`` of every replicate of ``key``."""
        return torch.cat(self.counts[key])

    def seen(self) -> Leakage:
        """Leakage over the replicates: the largest count; unknown if any is unknown."""
        reasons = "; ".join(sorted({x.reason for x in self.leakage if x.reason}))
        if any(x.seen is None for x in self.leakage):
            return Leakage(self.leakage[0].checked, None, reasons)
        return Leakage(self.leakage[0].checked, max(x.seen for x in self.leakage), reasons)


def sort_keys(keys: list[str]) -> list[str]:
    """``metric/layer`` keys grouped by layer, then metric."""

    def order(key: str) -> tuple:
        metric, layer = key.split("/", 1)
        rank = LAYER_ORDER.index(layer) if layer in LAYER_ORDER else len(LAYER_ORDER)
        return rank, layer, METRIC_ORDER.index(metric) if metric in METRIC_ORDER else 9

    return sorted(keys, key=order)


def metric_of(key: str, metrics: dict) -> Metric:
    """The metric function of a ``metric/layer`` key."""
    return metrics[key.split("/", 1)[0]]


def figures(row: Row, metrics: dict) -> dict[str, tuple[float, float]]:
    """``{key: (mean, SD)}`` over the replicates' values."""
    return {key: mean_sd(metric_of(key, metrics)(row.sums(key).sum(-2)).tolist()) for key in row.counts}


def differences(rows: list[Row], baselines: list[str], metrics: dict, resamples: int, seed: int) -> dict[str, dict]:
    """``{row label: {baseline label: {key: (diff, low, high)}}}`` for every row listed after a
    baseline row with the same BatchNorm protocol (so each pair is compared once, later - earlier)."""
    out: dict[str, dict] = {}
    for i, base in enumerate(rows):
        if base.group not in baselines:
            continue
        for row in (r for r in rows[i + 1 :] if r.bn == base.bn and r.group != base.group):
            out.setdefault(row.label, {})[base.label] = {
                key: paired_difference(row.sums(key), base.sums(key), metric_of(key, metrics), resamples, seed)
                for key in sort_keys([k for k in row.counts if k in base.counts])
            }
    return out


def no_information(rows: list[Row], scores: dict[str, float]) -> dict[str, float]:
    """Per key: the score of a guess that uses no features (correspondence: no movement), and
    ``chance/L`` (a uniformly random cell)."""
    out: dict[str, float] = {}
    for row in rows:
        for key in row.counts:
            metric, layer = key.split("/", 1)
            if metric == "corr":
                total = row.sums(key)[0].sum(0)  # geometry only: the same for every row
                out[key], out[f"chance/{layer}"] = float(total[2] / total[1]), float(total[3] / total[1])
            else:
                out[key] = scores[metric]
    return out


def format_table(rows: list[Row], metrics: dict, baseline_scores: dict[str, float], diffs: dict, clusters: dict) -> str:
    """The table in percent (mean ± SD), the no-information lines, and the paired differences."""
    keys = sort_keys(list({k: None for r in rows for k in r.counts}))
    width = max([len("model")] + [len(r.label) for r in rows] + [len("no information")])
    head = f"{'model':<{width}}  {'seen':>7}  " + "  ".join(f"{k:>13}" for k in keys) + f"  {'seconds':>7}"
    lines = [head]
    for row in rows:
        figs = figures(row, metrics)
        cells = [f"{100 * figs[k][0]:6.1f} ±{100 * figs[k][1]:4.1f}" if k in figs else f"{'-':>13}" for k in keys]
        lines.append(f"{row.label:<{width}}  {row.seen().cell():>7}  " + "  ".join(cells) + f"  {row.seconds:7.1f}")
    none = no_information(rows, baseline_scores)
    lines.append(f"{'no information':<{width}}  {'':>7}  " + "  ".join(f"{100 * none[k]:13.1f}" for k in keys))
    chance = [f"{100 * none['chance/' + k.split('/', 1)[1]]:13.1f}" if k.startswith("corr/") else f"{'':>13}" for k in keys]
    lines.append(f"{'chance':<{width}}  {'':>7}  " + "  ".join(chance))
    lines.append(
        "no information: fg = everything object, bf = no boundary, knn = the commonest train label, "
        "corr = no movement; chance: a uniformly random cell. seen: evaluation images found in the run's "
        "pretraining shards (? = cannot tell)"
    )
    for label, per_base in diffs.items():
        for base, per_key in per_base.items():
            lines.append(f"{label} - {base} (95 % paired bootstrap over photos; * = excludes 0):")
            by_layer: dict[str, list[str]] = {}
            for key, (d, low, high) in per_key.items():
                star = "*" if low > 0 or high < 0 else " "
                by_layer.setdefault(key.split("/", 1)[1], []).append(
                    f"{key.split('/')[0]:>4} {100 * d:+5.1f} [{100 * low:+5.1f}, {100 * high:+5.1f}]{star}"
                )
            lines += [f"    {layer:<7} " + "  ".join(cells) for layer, cells in by_layer.items()]
    lines.append("clusters: " + ", ".join(f"{k} {v} photos" for k, v in clusters.items()))
    return "\n".join(lines)


def json_row(row: Row, metrics: dict, baseline_scores: dict[str, float], diffs: dict, data_dir: str) -> dict[str, Any]:
    """One row as a JSON object (figures as fractions)."""
    figs = figures(row, metrics)
    return {
        "model": row.label,
        "bn": row.bn,
        "replicates": {k: int(row.sums(k).shape[0]) for k in sort_keys(list(row.counts))},
        "info": row.info,
        "figures": {k: figs[k][0] for k in sort_keys(list(figs))},
        "sd": {k: figs[k][1] for k in sort_keys(list(figs))},
        "no_information": no_information([row], baseline_scores),
        "differences": {base: {k: list(v) for k, v in per.items()} for base, per in diffs.get(row.label, {}).items()},
        "leakage": row.seen().as_dict(),
        "data": data_dir,
        "seconds": round(row.seconds, 1),
    }
