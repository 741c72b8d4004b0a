"""Input folders holding things that are not image files: pipes, devices, sockets, huge files.

Before: a named pipe hung ``python -m shards folder`` forever and a symlink to ``/dev/zero`` was
read until memory ran out. Now only regular files are read, never beyond a cap derived from
``--max-pixels``, and everything else is skipped and listed with its reason.
"""

import json
import os
import socket
import threading

import pytest

from shards.limits import max_file_bytes
from shards.source_file import FILE_TOO_LARGE, NOT_REGULAR, SourceFileError, read_source_file
from tests.shards.builders import manifest, read_all, run_cli, write_files

TIMEOUT_S = 60


def _in_thread(fn, seconds: float = 10.0):
    """``fn()`` in a daemon thread; fail (instead of hanging the suite) when it does not return."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(_capture(fn)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s (blocked on a special file)"
    return out[0]


def _capture(fn):
    try:
        return fn()
    except Exception as exc:  # handed to the test's thread
        return exc


@pytest.fixture()
def hostile_folder(tmp_path, small_jpegs):
    root = tmp_path / "src"
    photos = {f"ok/p{i}.jpg": p.read_bytes() for i, p in enumerate(small_jpegs[:3])}
    write_files(root, photos)
    os.mkfifo(root / "ok" / "pipe.jpg")
    os.symlink("/dev/zero", root / "ok" / "zero.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "ok" / "sock.jpg"))
    # sparse: a file one byte over the cap that --max-pixels 10M derives costs no disk and,
    # being refused from its size, no reading either
    with open(root / "ok" / "huge.jpg", "wb") as f:
        f.truncate(max_file_bytes(10_000_000) + 1)
    yield root, photos
    sock.close()


def test_conversion_skips_special_and_oversized_files_with_reasons(hostile_folder, tmp_path):
    root, photos = hostile_folder
    out = tmp_path / "out"
    done = run_cli(
        "folder", str(root), str(out), "--no-progress", "--workers", "1", "--max-pixels", "10000000", timeout=TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr
    m = manifest(out)
    skipped = {s["source"]: s for s in m["skipped"]}
    assert {k: s["reason"] for k, s in skipped.items()} == {
        "ok/pipe.jpg": NOT_REGULAR,
        "ok/zero.jpg": NOT_REGULAR,
        "ok/sock.jpg": NOT_REGULAR,
        "ok/huge.jpg": FILE_TOO_LARGE,
    }
    assert "named pipe" in skipped["ok/pipe.jpg"]["detail"]
    assert "/dev/zero" in skipped["ok/zero.jpg"]["detail"]
    assert "socket" in skipped["ok/sock.jpg"]["detail"]
    assert str(max_file_bytes(10_000_000)) in skipped["ok/huge.jpg"]["detail"]
    kept = {json.loads(s["json"])["source"]: s["jpg"] for s in read_all(out, "train").values()}
    assert kept == photos
    assert m["totals"]["skipped_by_reason"] == {NOT_REGULAR: 3, FILE_TOO_LARGE: 1}


def test_reader_checks_the_opened_file_not_a_listing(tmp_path):
    """What the writer meets can differ from what was listed: the check is on the open file."""
    fifo = tmp_path / "later.jpg"
    os.mkfifo(fifo)
    err = _in_thread(lambda: read_source_file(fifo, 1 << 20))
    assert isinstance(err, SourceFileError) and err.reason == NOT_REGULAR
    err = _in_thread(lambda: read_source_file("/dev/zero", 1 << 20))
    assert isinstance(err, SourceFileError) and err.reason == NOT_REGULAR
    data = os.urandom(1000)
    path = tmp_path / "f.jpg"
    path.write_bytes(data)
    assert read_source_file(path, 1000) == data  # exactly at the cap: read
    err = _capture(lambda: read_source_file(path, 999))
    assert isinstance(err, SourceFileError) and err.reason == FILE_TOO_LARGE


def test_file_cap_is_derived_from_the_pixel_limit():
    # an uncompressed 16-bit RGBA image (8 bytes per pixel) at the limit must still fit
    assert max_file_bytes(1000) >= 1000 * 8
    assert max_file_bytes(2000) - max_file_bytes(1000) == 1000 * 8
