"""``python -m pipeline.bench``: every mode runs on tiny shards, prints and logs what it measured."""

from __future__ import annotations

import json

import pytest

from pipeline import bench
from tests.pipeline.test_source import small_jpegs, write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory, real_jpegs) -> str:
    root = tmp_path_factory.mktemp("bench-shards")
    write_shards(root, small_jpegs(real_jpegs, 16), n_shards=2)
    return str(root)


def run(shards: str, tmp_path, *extra: str) -> list[dict]:
    out = tmp_path / "bench.jsonl"
    argv = ["--shards", shards, "--batch-size", "4", "--steps", "2", "--warmup", "1", "--workers", "1",
            "--device", "cpu", "--json-out", str(out), *extra]
    assert bench.main(argv) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_cpu_backend_against_the_reference_and_decoding(shards, tmp_path, capsys):
    rows = run(shards, tmp_path, "--recipe", "two-view", "--vs", "reference", "--decode-only", "--with-m")
    assert [r["label"] for r in rows] == ["cpu", "reference", "decode-only"]
    for r in rows:
        assert r["images"] == 8 and r["images_per_s"] > 0 and r["bad_samples"] in (0, None)
    assert rows[0]["views_per_s"] == pytest.approx(2 * rows[0]["images_per_s"], rel=1e-3)
    assert rows[0]["m_pairs_per_batch"] == 2 and rows[0]["m_matches_per_batch"] >= 0
    printed = capsys.readouterr().out
    assert "images/s ratio cpu / reference" in printed and "% of decode-only" in printed


def test_torch_backend_stream_only_runs_without_a_gpu(shards, tmp_path):
    (row,) = run(shards, tmp_path, "--backend", "torch", "--decode", "gpu", "--recipe", "clove", "--stream-only")
    assert row["label"] == "torch/decode=gpu/stream" and row["images"] == 8 and row["views_per_s"] > 0
    row = run(shards, tmp_path, "--backend", "torch", "--decode", "cpu", "--recipe", "clove", "--stream-only")[-1]
    assert row["label"] == "torch/decode=cpu/stream" and row["images"] == 8


def test_bad_arguments_are_one_line_errors(shards, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--shards", shards, "--stream-only"])  # cpu backend
    assert "--stream-only" in capsys.readouterr().err
    assert bench.main(["--shards", str(tmp_path / "missing"), "--json-out", str(tmp_path / "x.jsonl")]) == 2
    assert bench.main(["--shards", shards, "--backend", "torch", "--decode", "gpu", "--device", "cpu", "--steps", "1",
                       "--json-out", str(tmp_path / "x.jsonl")]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
