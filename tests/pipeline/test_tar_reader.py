"""The tar reader's header checksum, on its own path: a damaged header is refused at once.

Before, a mutant that ignored the checksum survived the whole suite: garbage only failed later, on
octal parsing, and a header whose *name* was damaged was accepted under the wrong name.
"""

from __future__ import annotations

import io
import tarfile

import pytest

from pipeline.source import read_shard
from pipeline.tar_reader import TarFormatError, TarReader

CHKSUM = slice(148, 156)


def make_tar(files: list[tuple[str, bytes]]) -> bytearray:
    """A ustar archive written by Python's tarfile (an independent writer)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return bytearray(buf.getvalue())


def header_sum(hdr: bytes, signed: bool = False) -> int:
    """The checksum by its definition: every header byte, the checksum field read as 8 spaces."""
    values = [(b - 256 if signed and b >= 0x80 else b) for b in hdr[:148]] + [32] * 8
    return sum(values) + sum((b - 256 if signed and b >= 0x80 else b) for b in hdr[156:512])


def set_checksum(tar: bytearray, offset: int, value: int) -> None:
    tar[offset + 148 : offset + 156] = b"%06o\0 " % value


def names(data: bytes) -> list[str]:
    reader = TarReader(io.BytesIO(bytes(data)))
    out = []
    for name in reader.members():
        reader.read()
        out.append(name)
    return out


FILES = [("a.jpg", b"A" * 600), ("a.cls", b"1"), ("b.jpg", b"B" * 100)]


def test_valid_archive_reads_and_checksums_match_their_definition():
    tar = make_tar(FILES)
    assert int(tar[CHKSUM].split(b"\0")[0], 8) == header_sum(tar[:512])  # what tarfile wrote
    assert names(tar) == [n for n, _ in FILES]


def test_damaged_name_is_refused_not_read_under_the_wrong_name():
    tar = make_tar(FILES)
    tar[0] = ord("z")  # "a.jpg" -> "z.jpg"; every field still parses
    with pytest.raises(TarFormatError, match="checksum"):
        names(tar)


@pytest.mark.parametrize("member", [0, 1, 2])
def test_damaged_size_or_checksum_of_any_member_is_refused(member):
    tar = make_tar(FILES)
    offsets = [m.offset for m in tarfile.open(fileobj=io.BytesIO(bytes(tar))).getmembers()]
    hdr = offsets[member]
    good = header_sum(tar[hdr : hdr + 512])
    set_checksum(tar, hdr, good + 1)  # a valid octal number that is not the sum
    with pytest.raises(TarFormatError, match="checksum"):
        names(tar)
    set_checksum(tar, hdr, good)
    assert names(tar) == [n for n, _ in FILES]  # restored by the definition: read again
    tar[hdr + 124 + 10] ^= 1  # one bit of the size field: a different, still octal, size
    with pytest.raises(TarFormatError, match="checksum"):
        names(tar)


def test_checksum_field_that_is_not_a_number_is_a_format_error():
    tar = make_tar(FILES)
    tar[CHKSUM] = b"zzzzzz\0 "
    with pytest.raises(TarFormatError, match="checksum"):
        names(tar)


def test_signed_checksum_of_old_tars_is_accepted_as_tarfile_does():
    tar = make_tar([("n\u00e9.jpg", b"N" * 3)])  # a byte >= 0x80 in the name: signed != unsigned
    signed = header_sum(tar[:512], signed=True)
    assert signed != header_sum(tar[:512])
    set_checksum(tar, 0, signed)
    assert [m.name for m in tarfile.open(fileobj=io.BytesIO(bytes(tar)))] == ["n\u00e9.jpg"]  # the oracle
    assert names(tar) == ["n\u00e9.jpg"]


def test_read_shard_keeps_samples_before_a_damaged_header_and_counts_the_shard(tmp_path):
    tar = make_tar([*FILES, ("c.jpg", b"C" * 10)])
    offsets = [m.offset for m in tarfile.open(fileobj=io.BytesIO(bytes(tar))).getmembers()]
    tar[offsets[3]] = ord("d")  # "c.jpg" header damaged
    path = tmp_path / "t-000000.tar"
    path.write_bytes(bytes(tar))
    counters: dict[str, int] = {}
    got = [(s.key, s.label) for s in read_shard(str(path), counters)]
    # "b" was still being assembled (a sample ends at the next key): it is counted, not kept
    assert got == [("a", 1)] and counters["bad_shards"] == 1 and counters["bad_samples"] == 1
