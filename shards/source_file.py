"""Reading one source file safely: regular files only, never more than a cap.

An input folder can hold anything a name matches: a named pipe (opening it waits for a writer
forever), a symlink to ``/dev/zero`` (reads until memory runs out), a socket, a device, or a huge
regular file. :func:`read_source_file` opens without blocking, checks the *opened* file (no race
between a check and the read), refuses anything but a regular file, and reads at most
``max_bytes``. :func:`not_regular` is the same check from a path, used when listing sources.
"""

from __future__ import annotations

import os
import stat

# Reason codes (the manifest counts skips by these; see also shards.probe and shards.plan).
NOT_REGULAR = "not-a-regular-file"
FILE_TOO_LARGE = "too-large"  # the same code as an image over --max-pixels: too big to keep


class SourceFileError(Exception):
    """A source that is not read, with a reason code and a one-line detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def file_kind(mode: int) -> str:
    """Human name of a file type from ``st_mode`` (``"named pipe (FIFO)"``, ``"regular file"``...)."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def _describe(path: str | os.PathLike, mode: int) -> str:
    kind = file_kind(mode)
    if os.path.islink(path):
        return f"symlink to {os.path.realpath(path)}, a {kind}; only regular files are read"
    return f"a {kind}; only regular files are read"


def not_regular(path: str | os.PathLike) -> str | None:
    """Why ``path`` (symlinks followed) is not a regular file, or None when it is one.

    Raises:
        OSError: the path does not exist (a broken link) or cannot be stat'ed.
    """
    mode = os.stat(path).st_mode  # stat never opens: safe on pipes and devices
    return None if stat.S_ISREG(mode) else _describe(path, mode)


def read_source_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of regular file ``path`` (symlinks followed), at most ``max_bytes`` of them.

    Raises:
        SourceFileError: not a regular file (:data:`NOT_REGULAR`), or larger than ``max_bytes``
            (:data:`FILE_TOO_LARGE`, decided from its size before reading, or while reading when
            it grows).
        OSError: the file cannot be opened or read.
    """
    # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    with os.fdopen(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceFileError(NOT_REGULAR, _describe(path, st.st_mode))
        if st.st_size > max_bytes:
            raise SourceFileError(
                FILE_TOO_LARGE, f"file of {st.st_size} bytes exceeds the cap of {max_bytes} bytes derived from --max-pixels"
            )
        chunks, total = [], 0
        while total <= max_bytes:  # the size may have grown since fstat: never trust it
            chunk = f.read(min(1 << 24, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise SourceFileError(
                FILE_TOO_LARGE, f"file grew past the cap of {max_bytes} bytes derived from --max-pixels while being read"
            )
        return b"".join(chunks)
