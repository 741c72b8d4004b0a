"""Cutting files into trips and putting them back together (scripts/gpucheck/transfer.py)."""

import hashlib
import json
import os

import pytest

from gpucheck.transfer import MANIFEST, cut_into_trips, reassemble, stash


def _files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"a.whl": 1000, "b.whl": 250, "c.tar": 99, "empty.whl": 0}
    for name, n in sizes.items():
        (src / name).write_bytes(os.urandom(n))
    return src, sizes


def test_trips_respect_the_limit_and_rebuild_every_file(tmp_path):
    src, sizes = _files(tmp_path)
    limit = 100
    m = cut_into_trips([(src / n, "base") for n in sizes], tmp_path / "trips", limit)
    trips = sorted((tmp_path / "trips").iterdir())
    assert len(trips) == m["trips"] and len(trips) >= sum(sizes.values()) / limit
    for t in trips:
        payload = sum(p.stat().st_size for p in t.iterdir() if p.name != MANIFEST)
        assert payload <= limit
        assert json.loads((t / MANIFEST).read_text()) == m  # every trip can start the rebuild
    for f in m["files"]:
        assert all(p["size"] <= limit for p in f["pieces"])
    status = reassemble(trips, tmp_path / "out")
    assert status == {n: "ok" for n in sizes}
    for n in sizes:
        assert (tmp_path / "out" / n).read_bytes() == (src / n).read_bytes()


def test_a_missing_trip_is_reported_then_completed_by_a_stash(tmp_path):
    src, sizes = _files(tmp_path)
    m = cut_into_trips([(src / "a.whl", "dali"), (src / "b.whl", "base")], tmp_path / "trips", 300)
    trips = sorted((tmp_path / "trips").iterdir())
    status = reassemble(trips[:-1], tmp_path / "out")
    in_last = {f["name"] for f in m["files"] if any(p["trip"] == len(trips) for p in f["pieces"])}
    assert in_last and all(status[n].startswith("missing") for n in in_last)
    assert all(status[f["name"]] == "ok" for f in m["files"] if f["name"] not in in_last)
    assert not any((tmp_path / "out" / n).exists() for n in in_last)
    # the trips arrive one by one in a stash folder; the last one is read where it lies
    for t in trips[:-1]:
        stash([t], tmp_path / "stash")
    status = reassemble([tmp_path / "stash", trips[-1]], tmp_path / "out")
    assert set(status.values()) == {"ok"}
    assert hashlib.sha256((tmp_path / "out" / "a.whl").read_bytes()).hexdigest() == m["files"][0]["sha256"]


def test_a_damaged_piece_is_not_used(tmp_path):
    src, _ = _files(tmp_path)
    cut_into_trips([(src / "a.whl", "base")], tmp_path / "trips", 400)
    piece = next((tmp_path / "trips").rglob("a.whl.part001"))
    data = bytearray(piece.read_bytes())
    data[7] ^= 0xFF
    piece.write_bytes(bytes(data))
    status = reassemble([tmp_path / "trips"], tmp_path / "out")
    assert status == {"a.whl": "missing or damaged pieces 1/3"}
    assert not (tmp_path / "out" / "a.whl").exists()


def test_bad_input_says_what_to_do(tmp_path):
    src, _ = _files(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.whl").write_bytes(b"x")
    with pytest.raises(ValueError, match="rename"):
        cut_into_trips([(src / "a.whl", "base"), (tmp_path / "other" / "a.whl", "base")], tmp_path / "t", 100)
    with pytest.raises(FileNotFoundError, match="transfer folder"):
        reassemble([tmp_path / "nothing"], tmp_path / "out")


def test_requirements_come_from_pyproject_also_without_tomllib():
    import tomllib

    from gpucheck.requirements import ROOT, _pyproject, _pyproject_lists, base_requirements, dali_requirements

    text = (ROOT / "pyproject.toml").read_text()
    full = tomllib.loads(text)["project"]
    assert _pyproject_lists(text)["project"]["dependencies"] == full["dependencies"]
    assert _pyproject_lists(text)["project"]["optional-dependencies"]["dali"] == full["optional-dependencies"]["dali"]
    assert _pyproject()["project"]["dependencies"] == full["dependencies"]
    assert not any(r.startswith(("torch", "torchvision")) for r in base_requirements())
    assert dali_requirements() == full["optional-dependencies"]["dali"]
