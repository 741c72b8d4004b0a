"""``python -m pipeline.bench``: every mode runs on tiny shards, and what it prints and logs adds up.

The shards hold JPEGs padded to one byte length (zeros after the end-of-image marker, which every
decoder ignores), so the bytes a run must report follow from its image count alone.
"""

from __future__ import annotations

import json

import pytest

from pipeline import bench
from tests.pipeline.helpers import small_jpegs, strict_refuses_lenient_reads, write_shards, zero_mid_scan

LENGTH = 65_536  # bytes of every test JPEG (zero-padded; a 160-px JPEG of any photo fits)
BATCH, STEPS = 4, 2


def padded(images: list[bytes]) -> list[bytes]:
    assert max(len(d) for d in images) <= LENGTH
    return [d + bytes(LENGTH - len(d)) for d in images]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, real_jpegs) -> str:
    root = tmp_path_factory.mktemp("bench-shards")
    write_shards(root, padded(small_jpegs(real_jpegs, 16, max_side=160)), n_shards=2)
    return str(root)


@pytest.fixture(scope="module")
def damaged_shards(tmp_path_factory, real_jpegs) -> str:
    """Only JPEGs the damage really broke (zeros can happen to decode as valid codes)."""
    root = tmp_path_factory.mktemp("damaged-shards")
    damaged = [zero_mid_scan(d) for d in small_jpegs(real_jpegs, 24, max_side=160)]
    damaged = [d for d in damaged if strict_refuses_lenient_reads(d)]
    assert len(damaged) >= 4, "too few broken test images"
    write_shards(root, padded(damaged), n_shards=2)
    return str(root)


def run(shards: str, tmp_path, *extra: str) -> list[dict]:
    out = tmp_path / "bench.jsonl"
    argv = [
        "--shards",
        shards,
        "--batch-size",
        str(BATCH),
        "--steps",
        str(STEPS),
        "--warmup",
        "1",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--json-out",
        str(out),
        *extra,
    ]
    assert bench.main(argv) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def assert_adds_up(row: dict, views_per_image: int, bytes_counted: bool = True) -> None:
    """Counts follow from the batches consumed; each rate is the quotient of its figures."""
    assert row["images"] == BATCH * STEPS
    assert row["views"] == row["images"] * views_per_image
    assert row["bytes"] == row["images"] * LENGTH and row["bytes_estimated"] is not bytes_counted
    wall = row["wall_s"]
    assert wall > 0 and row["cpu_s"] >= 0
    assert row["images_per_s"] == pytest.approx(row["images"] / wall, rel=1e-9)
    assert row["views_per_s"] == pytest.approx(row["views"] / wall, rel=1e-9)
    assert row["mb_per_s"] == pytest.approx(row["bytes"] / wall / 1e6, rel=1e-9)
    assert row["cpu_cores_busy"] == pytest.approx(row["cpu_s"] / wall, rel=1e-9)


def test_cpu_backend_against_the_reference_and_decoding(shards, tmp_path, capsys):
    rows = run(shards, tmp_path, "--recipe", "two-view", "--vs", "reference", "--decode-only", "--with-m")
    assert [r["label"] for r in rows] == ["cpu", "reference", "decode-only"]
    cpu, reference, decode = rows
    assert_adds_up(cpu, 2)
    assert_adds_up(reference, 2, bytes_counted=False)  # the public-code loader counts nothing
    assert_adds_up(decode, 0)
    assert (cpu["bad_samples"], cpu["recovered_samples"]) == (0, 0)
    assert (decode["bad_samples"], decode["recovered_samples"]) == (0, 0)
    assert reference["bad_samples"] is None and reference["recovered_samples"] is None
    assert cpu["first_run_speedup"] == 1.0
    assert reference["first_run_speedup"] == pytest.approx(cpu["images_per_s"] / reference["images_per_s"])
    # M: each of the 2 global views against the other one
    assert cpu["m_pairs_per_batch"] == 2 and cpu["m_matches_per_batch"] >= 0
    printed = capsys.readouterr().out
    assert "images/s ratio cpu / reference" in printed and "% of decode-only" in printed


def test_recovered_jpegs_are_counted_and_shown(damaged_shards, tmp_path, capsys):
    """Every image has 2,000 zeroed bytes mid-scan: each one decoded is a recovered sample."""
    rows = run(damaged_shards, tmp_path, "--recipe", "two-view", "--decode-only")
    for row in rows:
        assert_adds_up(row, {"cpu": 2, "decode-only": 0}[row["label"]])
        assert row["bad_samples"] == 0 and row["recovered_samples"] == row["images"]
    printed = capsys.readouterr().out
    assert "recov" in printed


def test_torch_backend_stream_only_runs_without_a_gpu(shards, tmp_path):
    (row,) = run(shards, tmp_path, "--backend", "torch", "--decode", "gpu", "--recipe", "clove", "--stream-only")
    assert row["label"] == "torch/decode=gpu/stream"
    assert_adds_up(row, 8)  # the clove recipe: 2 global + 6 local views
    row = run(shards, tmp_path, "--backend", "torch", "--decode", "cpu", "--recipe", "clove", "--stream-only")[-1]
    assert row["label"] == "torch/decode=cpu/stream"
    assert_adds_up(row, 8)


def test_bad_arguments_are_one_line_errors(shards, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--shards", shards, "--stream-only"])  # cpu backend
    assert "--stream-only" in capsys.readouterr().err
    assert bench.main(["--shards", str(tmp_path / "missing"), "--json-out", str(tmp_path / "x.jsonl")]) == 2
    assert (
        bench.main(
            [
                "--shards",
                shards,
                "--backend",
                "torch",
                "--decode",
                "gpu",
                "--device",
                "cpu",
                "--steps",
                "1",
                "--json-out",
                str(tmp_path / "x.jsonl"),
            ]
        )
        == 2
    )
    assert "needs a CUDA device" in capsys.readouterr().err


def test_the_m_count_uses_clove_s_threshold_and_the_recipe_s_stride():
    """``--with-m`` counts CLoVE's M: its default threshold is CLoVE's own (the model's default; the
    pipeline may not import the model, so the two are kept equal here)."""
    from model.clove import CLOVE_DEFAULTS
    from pipeline.views import RECIPES

    assert bench.parse_args(["--shards", "x"]).m_threshold == CLOVE_DEFAULTS["t_pos"]
    assert RECIPES["clove"].feature_stride == 32  # ResNet C5, the map CLoVE's M is built on
