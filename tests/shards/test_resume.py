"""Interrupted conversions resume to the very same bytes; output independent of worker count."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shards.convert import ConversionError, ConvertOptions, convert
from shards.folder import scan_folder
from tests.shards.builders import cli, env, manifest, run_cli, tree_bytes, write_files


@pytest.fixture(scope="module")
def src(tmp_path_factory, small_jpegs, small_pngs):
    root = tmp_path_factory.mktemp("resume") / "src"
    files = {f"c{i % 3}/img{i:02d}.jpg": p.read_bytes() for i, p in enumerate(small_jpegs)}
    files["c0/broken.jpg"] = small_jpegs[0].read_bytes()[:5000]  # a skip must also survive a resume
    files["c1/photo.png"] = small_pngs[0].read_bytes()
    write_files(root, files)
    return root


@pytest.fixture(scope="module")
def reference(src, tmp_path_factory):
    """An uninterrupted run, no subprocesses."""
    out = tmp_path_factory.mktemp("reference") / "out"
    convert(scan_folder(src, classes_from_dirs=True), out, ConvertOptions(max_count=2, seed=7, workers=1, progress=False))
    return tree_bytes(out)


ARGS = ("--classes-from-dirs", "--max-count", "2", "--seed", "7", "--no-progress")


def _interrupt(src: Path, out: Path, sig: int) -> subprocess.CompletedProcess:
    """Start a conversion that pauses after each shard; send ``sig`` once 2 shards are done."""
    proc = subprocess.Popen(
        cli("folder", str(src), str(out), *ARGS, "--workers", "2", "--pause-per-shard", "0.4"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        # as a terminal's foreground job: a suite started in the background by a non-interactive
        # shell ignores SIGINT, and the child would inherit that and never see the Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while len(list(out.glob("train-*.tar"))) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline, "conversion made no progress"
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_interrupted_run_resumes_to_identical_shards(sig, src, reference, tmp_path):
    out = tmp_path / "out"
    killed = _interrupt(src, out, sig)
    assert killed.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), killed.stderr
    n_shards = len([k for k in reference if k.endswith(".tar")])
    done = list(out.glob("train-*.tar"))
    assert 2 <= len(done) < n_shards and not (out / "manifest.json").exists()
    if sig == signal.SIGINT:
        assert "run the same command again to resume" in killed.stderr
    time.sleep(0.2)  # the killed run's workers die with it (PR_SET_PDEATHSIG)
    if sig == signal.SIGKILL:
        # a finished shard damaged afterwards (say, a crash before the disk caught up) no longer
        # matches its record: it must be rewritten, not trusted
        victim = sorted(done)[0]
        victim.write_bytes(victim.read_bytes()[:4096])
    rerun = run_cli("folder", str(src), str(out), *ARGS, "--workers", "1")
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming:" in rerun.stdout
    # identical bytes: every shard, index and the manifest; no temporary file left behind
    assert tree_bytes(out) == reference
    m = manifest(out)
    assert m["totals"]["skipped_by_reason"] == {"truncated": 1}


def test_output_does_not_depend_on_worker_count(src, reference, tmp_path):
    out = tmp_path / "out"
    convert(scan_folder(src, classes_from_dirs=True), out, ConvertOptions(max_count=2, seed=7, workers=2, progress=False))
    assert tree_bytes(out) == reference


def test_seed_changes_the_assignment_and_other_options_need_overwrite(src, reference, tmp_path):
    out = tmp_path / "out"
    source = scan_folder(src, classes_from_dirs=True)
    convert(source, out, ConvertOptions(max_count=2, seed=8, workers=1, progress=False))
    other = tree_bytes(out)
    assert other.keys() == reference.keys() and other != reference
    with pytest.raises(ConversionError, match="--overwrite"):
        convert(source, out, ConvertOptions(max_count=2, seed=7, workers=1, progress=False))
    convert(source, out, ConvertOptions(max_count=2, seed=7, workers=1, progress=False, overwrite=True))
    assert tree_bytes(out) == reference


def test_rerun_of_a_finished_conversion_changes_nothing(src, reference, tmp_path):
    out = tmp_path / "out"
    args = ("folder", str(src), str(out), *ARGS, "--workers", "1")
    assert run_cli(*args).returncode == 0
    stamp = {p: os.stat(p).st_mtime_ns for p in out.iterdir()}
    again = run_cli(*args)
    assert again.returncode == 0 and "already complete" in again.stdout
    assert {p: os.stat(p).st_mtime_ns for p in out.iterdir()} == stamp
    assert tree_bytes(out) == reference


@pytest.mark.parametrize("lost", ["train-000001.tar", "train-000001.idx", "_info.json", "all three"])
def test_rerun_restores_every_file_deleted_from_a_finished_conversion(lost, src, reference, tmp_path):
    """Before: a deleted index (or _info.json) stayed missing after a rerun ("already complete")."""
    out = tmp_path / "out"
    args = ("folder", str(src), str(out), *ARGS, "--workers", "1")
    assert run_cli(*args).returncode == 0
    names = ["train-000001.tar", "train-000001.idx", "_info.json"] if lost == "all three" else [lost]
    for name in names:
        (out / name).unlink()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "restored" in again.stdout and all(name in again.stdout for name in names)
    assert tree_bytes(out) == reference  # the very bytes of an uninterrupted run, nothing more
    ok = run_cli("verify", str(out), "--workers", "1", "--no-progress")
    assert ok.returncode == 0, ok.stdout


def test_damaged_shard_is_rewritten_and_checked_against_its_record(src, reference, tmp_path):
    out = tmp_path / "out"
    source = scan_folder(src, classes_from_dirs=True)
    options = ConvertOptions(max_count=2, seed=7, workers=1, progress=False)
    convert(source, out, options)
    victim = out / "train-000002.tar"
    victim.write_bytes(victim.read_bytes()[:4096])  # resized: cut short
    convert(source, out, options)
    assert tree_bytes(out) == reference
    # sources changed in place (same names and sizes): the rewrite cannot match the record
    photo = src / "c1" / "img01.jpg"
    original = photo.read_bytes()
    try:
        photo.write_bytes(original[:-200] + bytes(200))
        for tar in out.glob("train-*.tar"):
            tar.unlink()
        with pytest.raises(ConversionError, match="--overwrite"):
            convert(source, out, options)
    finally:
        photo.write_bytes(original)
