"""The row statistics against direct versions written here: a resampling loop, sums by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.stats import cluster_sums, mean_sd, paired_difference, row_value


def _ratio(c: torch.Tensor) -> torch.Tensor:
    return c[..., 0] / c[..., 1]


def _slow_interval(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> tuple[float, float, float]:
    """Per draw: pick clusters with replacement, sum each replicate's counts over them, take the
    mean over replicates of correct / total, subtract."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.shape[1], size=(resamples, a.shape[1]))
    diffs = []
    for draw in idx:
        va = np.mean([r[draw].sum(0)[0] / r[draw].sum(0)[1] for r in a])
        vb = np.mean([r[draw].sum(0)[0] / r[draw].sum(0)[1] for r in b])
        diffs.append(va - vb)
    point = np.mean([r.sum(0)[0] / r.sum(0)[1] for r in a]) - np.mean([r.sum(0)[0] / r.sum(0)[1] for r in b])
    low, high = np.quantile(diffs, [0.025, 0.975])
    return point, low, high


def test_the_paired_bootstrap_equals_a_direct_resampling_loop():
    rng = np.random.default_rng(0)
    total = rng.integers(20, 60, size=(1, 15, 1)).repeat(3, 0)
    a = np.concatenate([rng.binomial(total, 0.6), total], -1).astype(float)  # 3 replicates, 15 clusters
    b = np.concatenate([rng.binomial(total[:2], 0.5), total[:2]], -1).astype(float)  # 2 replicates
    got = paired_difference(torch.tensor(a), torch.tensor(b), _ratio, num_resamples=300, seed=4)
    assert got == pytest.approx(_slow_interval(a, b, 300, 4), abs=1e-12)
    assert got[1] <= got[0] <= got[2]


def test_identical_rows_differ_by_zero_and_a_shift_is_found():
    counts = torch.tensor([[[3.0, 10], [5, 10], [2, 10], [6, 10]]])
    assert paired_difference(counts, counts, _ratio, 100) == (0.0, 0.0, 0.0)
    better = counts.clone()
    better[..., 0] += 2
    d, low, high = paired_difference(better, counts, _ratio, 100)
    assert d == pytest.approx(0.2) and low == pytest.approx(0.2) and high == pytest.approx(0.2)


def test_cluster_sums_row_value_and_mean_sd():
    stats = torch.tensor([[1.0, 2], [3, 4], [5, 6], [7, 8]])
    clusters = torch.tensor([2, 0, 2, 1])
    assert cluster_sums(stats, clusters, 3).tolist() == [[3, 4], [7, 8], [6, 8]]
    assert row_value(torch.tensor([[[1.0, 4]], [[3.0, 4]]]), _ratio) == pytest.approx(0.5)
    assert mean_sd([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, np.std([1, 2, 4], ddof=1)))
    assert mean_sd([0.5]) == (0.5, 0.0)
