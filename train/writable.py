"""Outputs that cannot be written, found before the work starts and said in one line.

A full disk or a read-only folder used to surface at the end (``python -m evaluation`` ran the whole
evaluation before failing to write ``--out``) or as a 35-line ``torch.save`` traceback
("unexpected pos ..."). :func:`check_output_writable` probes a file's folder by writing (and
removing) a small file there; :func:`write_error` turns any failed write into one line.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

PROBE_BYTES = 4096  # a write of this size must succeed (a full disk refuses it)


def write_error(path: str | Path, e: BaseException) -> OSError:
    """One-line OSError for a failed write of ``path``, saying what to do."""
    code = getattr(e, "errno", None)
    first = (str(e).splitlines() or [type(e).__name__])[0][:200]
    if code == errno.ENOSPC or "unexpected pos" in first or "No space" in first:
        why, fix = "the disk is full", "free space there or choose another output path"
    elif code in (errno.EROFS, errno.EACCES, errno.EPERM):
        why, fix = "it is read-only or not writable by this user", "choose another output path"
    else:
        why, fix = f"{type(e).__name__}: {first}", "check the output path"
    return OSError(code or errno.EIO, f"cannot write {path}: {why}; {fix}")


def check_output_writable(path: str | Path) -> None:
    """Make sure output file ``path`` can be written before any work starts.

    Creates its parent folders, writes and removes a small probe file beside it, and opens ``path``
    for appending when it exists. Raises ValueError (``path`` is a folder) or a one-line OSError
    (read-only, no permission, full disk)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; name a file, e.g. {path / 'eval.jsonl'}")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".densessl-write-probe-", dir=parent)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
        if path.exists():
            with open(path, "a"):
                pass
    except OSError as e:
        raise write_error(path, e) from None
