"""Schedules against values worked out by hand from their definitions."""

from __future__ import annotations

import math

import pytest

from model.schedule import cosine, scaled_lr, warmup_cosine


def test_lr_scales_with_the_global_batch():
    assert scaled_lr(1.0, 128, 8, 1) == 4.0  # 1024 images
    assert scaled_lr(1.0, 64, 2, 2) == 1.0  # accumulation counts
    assert scaled_lr(5e-4, 32, 1, 1) == pytest.approx(6.25e-5)


def test_warmup_is_linear_and_reaches_the_peak():
    peak, floor, warm, total = 2.0, 0.02, 10, 110
    assert warmup_cosine(0, total, warm, peak, floor) == pytest.approx(0.2)  # first step already moves
    assert warmup_cosine(4, total, warm, peak, floor) == pytest.approx(1.0)
    assert warmup_cosine(9, total, warm, peak, floor) == pytest.approx(peak)
    assert warmup_cosine(10, total, warm, peak, floor) == pytest.approx(peak)  # cosine starts at the peak


def test_cosine_decays_to_the_floor():
    peak, floor, warm, total = 2.0, 0.02, 10, 110
    assert warmup_cosine(60, total, warm, peak, floor) == pytest.approx((peak + floor) / 2)  # half way
    # a quarter of the way: floor + (peak - floor) * (1 + cos(pi/4)) / 2
    assert warmup_cosine(35, total, warm, peak, floor) == pytest.approx(floor + (peak - floor) * (1 + math.sqrt(0.5)) / 2)
    assert warmup_cosine(110, total, warm, peak, floor) == pytest.approx(floor)
    assert warmup_cosine(500, total, warm, peak, floor) == pytest.approx(floor)  # clamped past the end
    values = [warmup_cosine(s, total, warm, peak, floor) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_no_warmup():
    assert warmup_cosine(0, 100, 0, 1.0, 0.0) == pytest.approx(1.0)


def test_weight_decay_cosine_rises_like_gtsa():
    assert cosine(0, 100, 0.04, 0.4) == pytest.approx(0.04)
    assert cosine(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine(100, 100, 0.04, 0.4) == pytest.approx(0.4)
