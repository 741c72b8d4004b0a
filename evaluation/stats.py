"""Statistics of evaluation rows: mean ± SD over replicates, and paired bootstrap intervals
resampled by cluster (the photo behind each test unit), not by cell or pixel.

Cells of one photo are correlated, so treating them as independent trials understates the error
several-fold. Every metric here is a ratio of counts summed over test units (cells, images), so a
row's data are per-cluster count sums ``[R, C, K]`` (R replicates: init seeds, probe seeds or
training runs; C clusters; K counts) and a metric maps ``[..., K]`` counts to ``[...]`` values.
A resample draws C clusters with replacement; the same draw is applied to both rows of a
difference (paired), and the row value is the mean over its replicates of the metric.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

Metric = Callable[[Tensor], Tensor]


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample SD (``ddof=1``; 0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def cluster_sums(stats: Tensor, clusters: Tensor, num_clusters: int) -> Tensor:
    """Per-unit counts ``[..., U, K]`` summed per cluster ``[U]`` (ids 0..C-1) -> ``[..., C, K]`` float64."""
    out = torch.zeros(*stats.shape[:-2], num_clusters, stats.shape[-1], dtype=torch.float64)
    return out.index_add_(-2, clusters.long(), stats.double())


def resample_counts(num_clusters: int, num_resamples: int, seed: int = 0) -> Tensor:
    """How often each cluster is drawn in each resample ``[B, C]`` float64: draw ``b`` is
    ``numpy.random.default_rng(seed).integers(0, C, size=(B, C))[b]``."""
    draws = np.random.default_rng(seed).integers(0, num_clusters, size=(num_resamples, num_clusters))
    counts = np.zeros((num_resamples, num_clusters))
    np.add.at(counts, (np.arange(num_resamples)[:, None], draws), 1)
    return torch.from_numpy(counts)


def row_value(sums: Tensor, metric: Metric) -> float:
    """A row's value: the mean over replicates of the metric of all clusters' counts ``[R, C, K]``."""
    return float(metric(sums.sum(-2)).mean())


def paired_difference(
    sums_a: Tensor, sums_b: Tensor, metric: Metric, num_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Row a minus row b, and its percentile bootstrap interval at ``level``, resampling clusters
    (the same draws for both rows). ``sums_a`` ``[Ra, C, K]``, ``sums_b`` ``[Rb, C, K]``."""
    if sums_a.shape[-2] != sums_b.shape[-2]:
        raise ValueError(
            f"rows have {sums_a.shape[-2]} and {sums_b.shape[-2]} clusters: they were not evaluated on the same data"
        )
    counts = resample_counts(sums_a.shape[-2], num_resamples, seed)  # [B, C]

    def resampled(sums: Tensor) -> Tensor:  # [B]: the row value under each draw
        return metric(torch.einsum("bc,rck->rbk", counts, sums.double())).mean(0)

    diffs = (resampled(sums_a) - resampled(sums_b)).numpy()
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return row_value(sums_a, metric) - row_value(sums_b, metric), float(low), float(high)
