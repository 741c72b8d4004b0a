"""The ``python -m shards`` command line: help, sizes, one-line errors, the benchmark."""

import argparse

import pytest

from shards.__main__ import build_parser, parse_size
from tests.shards.builders import run_cli


@pytest.mark.parametrize("command", [[], ["imagenet"], ["coco"], ["folder"], ["photos"], ["verify"], ["bench"]])
def test_every_command_has_help(command):
    run = run_cli(*command, "--help")
    assert run.returncode == 0, run.stderr
    assert "usage: python -m shards" in run.stdout
    if command and command[0] in ("imagenet", "coco", "folder", "photos"):
        for option in ("--shard-size", "--seed", "--workers", "--max-pixels"):
            assert option in run.stdout
        assert "--pause-per-shard" not in run.stdout  # testing aid, hidden


def test_parse_size():
    assert parse_size("256MB") == 256 << 20
    assert parse_size("1G") == 1 << 30
    assert parse_size("64MiB") == 64 << 20
    assert parse_size("500k") == 500 << 10
    assert parse_size("1000") == 1000
    for bad in ("", "12 parsecs", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)


def test_parser_defaults():
    args = build_parser().parse_args(["folder", "src", "out"])
    assert args.shard_size == 256 << 20 and args.seed == 0 and args.max_count is None


def test_missing_source_is_a_one_line_error(tmp_path):
    run = run_cli("folder", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert run.returncode == 1
    assert run.stderr == f"shards: error: {tmp_path / 'nope'} is not a folder\n"


def test_folder_without_images_is_a_one_line_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "readme.txt").write_text("no images here")
    run = run_cli("folder", str(tmp_path / "src"), str(tmp_path / "out"))
    assert run.returncode == 1 and run.stderr.startswith("shards: error: no images found")


def test_bench_runs_and_prints_throughput(real_photos, tmp_path):
    run = run_cli("bench", "--images", "30", "--workers", "1", "--shard-size", "1", "--tmp", str(tmp_path))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    for label in ("folder", "coco"):
        line = next(x for x in lines if x.startswith(label))
        assert "30/30 images" in line and "images/s" in line and "MB/s" in line
    assert list(tmp_path.iterdir()) == []  # scratch removed
