"""The pictures draw what they claim: checked on coordinate-encoded images, not trusted.

Every pixel of the input stores its own position (red = column j, green = row i of a 256 x 192
PNG; pixel j's centre is x = j + 0.5). The views come from the same loader the CLI uses
(:func:`picture_batch`), so reading a view's red/green at a point drawn on it gives the
original-image place that is really shown there. Each test takes the points out of the finished
matplotlib figure (the drawn lines, the drawn grid points, the drawn colour maps) and reads them
back:

* a drawn match line joins two places whose original positions are closer than M's radius
  (``0.7 x`` the larger cell diagonal, computed here from the matrices with numpy), and each end
  reads back ``A^-1`` of its own position (so the line is drawn where the geometry says);
* cell ``k`` of an aligned grid reads back the same original point in the student and the
  teacher view;
* the colour of the inverse map is the red/green read from the view, divided by W and H.

Read-back error: the views reproduce the linear ramp up to 0.5 level (uint8 rounding) + 0.05
(fixed-point weights), see test_geometry_oracle.py; bilinear reading of a linear function adds
nothing. Points within the resampling kernel's reach of the view edge (where the crop cuts the
kernel) are left out, as in the oracle test.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from pipeline.pictures.__main__ import main
from pipeline.pictures.batch_source import picture_batch
from pipeline.pictures.draw_views import aligned_grids_figure, inverse_maps_figure, matches_figure
from pipeline.pictures.figure import pyplot
from pipeline.pictures.marks import is_flipped, match_segments, view_label
from pipeline.pictures.throughput import throughput_rows
from pipeline.views import RECIPES, view_matrix

W, H = 256, 192
N_IMAGES = 4
READ_TOL = 0.55  # px of the original: uint8 rounding + fixed-point weights
ALL_LOCALS = 16


@pytest.fixture(scope="module")
def ramp_shards(tmp_path_factory) -> str:
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = np.arange(W)[None, :]
    img[..., 1] = np.arange(H)[:, None]
    img[..., 2] = 128
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    path = tmp_path_factory.mktemp("ramp") / "ramp-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        for i in range(N_IMAGES):
            sink.write({"__key__": f"ramp{i}", "png": buf.getvalue()})
    return str(path)


def ramps(batch) -> list[np.ndarray]:
    """The batch's views as float arrays ``[B, 3, S, S]`` (converted once: the tests read them often)."""
    return [v.double().numpy() for v in batch.views]


def read_back(view: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Original ``(x, y)`` stored in a ramp view ``[3, S, S]`` at view points ``[N, 2]`` (bilinear)."""
    img = view[:2]
    size = img.shape[-1]
    fx = np.clip(points[:, 0] - 0.5, 0, size - 1)
    fy = np.clip(points[:, 1] - 0.5, 0, size - 1)
    x0, y0 = np.floor(fx).astype(int), np.floor(fy).astype(int)
    x1, y1 = np.minimum(x0 + 1, size - 1), np.minimum(y0 + 1, size - 1)
    wx, wy = fx - x0, fy - y0
    val = (
        img[:, y0, x0] * (1 - wx) * (1 - wy)
        + img[:, y0, x1] * wx * (1 - wy)
        + img[:, y1, x0] * (1 - wx) * wy
        + img[:, y1, x1] * wx * wy
    )
    return val.T + 0.5


def inverse(batch, b: int, v: int) -> np.ndarray:
    return np.linalg.inv(batch.matrices[b, v].double().numpy())


def to_original(batch, b: int, v: int, points: np.ndarray) -> np.ndarray:
    inv = inverse(batch, b, v)
    return points @ inv[:2, :2].T + inv[:2, 2]


def edge_ring(batch, b: int, v: int) -> float:
    """View pixels next to the edge where the resized crop is not a clean ramp (kernel cut + reading)."""
    zoom = np.abs(batch.matrices[b, v, :2, :2].double().numpy()).max()
    return math.ceil(2 * max(1.0, zoom)) + 1


def interior(batch, b: int, v: int, points: np.ndarray) -> np.ndarray:
    ring, size = edge_ring(batch, b, v), batch.views[v].shape[-1]
    return ((points >= ring) & (points <= size - ring)).all(axis=1)


def axes_by_gid(fig) -> dict[int, str]:
    return {id(ax.transData): ax.get_gid() for ax in fig.axes}


def parse(gid: str) -> tuple[int, int]:
    _, b, v = gid.split(":")
    return int(b), int(v)


@pytest.mark.parametrize("recipe", ["clove", "gtsa"])
def test_drawn_match_lines_join_the_same_content(ramp_shards, recipe):
    plt = pyplot()
    from matplotlib.patches import ConnectionPatch

    batch = picture_batch(ramp_shards, recipe, batch_size=N_IMAGES, seed=3)
    stride = RECIPES[recipe].feature_stride
    fig = matches_figure(batch, stride, 0.7, images=N_IMAGES, locals_shown=ALL_LOCALS, max_lines=25)
    where, views = axes_by_gid(fig), ramps(batch)
    lines = [a for a in fig.artists if isinstance(a, ConnectionPatch)]
    assert len(lines) > 100
    checked, pairs = 0, set()
    for line in lines:
        (b, va), (b2, vb) = parse(where[id(line.coords1)]), parse(where[id(line.coords2)])
        assert b == b2 and va == 0 and vb != 0
        pa, pb = np.array([line.xy1], float), np.array([line.xy2], float)
        if not (interior(batch, b, va, pa).all() and interior(batch, b, vb, pb).all()):
            continue
        oa, ob = read_back(views[va][b], pa), read_back(views[vb][b], pb)
        # each end shows the original place A^-1 says it does...
        assert np.abs(oa - to_original(batch, b, va, pa)).max() <= READ_TOL
        assert np.abs(ob - to_original(batch, b, vb, pb)).max() <= READ_TOL
        # ...and the two places are within M's radius of each other
        diag = [stride * np.sqrt((inverse(batch, b, v)[:2, :2] ** 2).sum()) for v in (va, vb)]
        assert np.linalg.norm(oa - ob) < 0.7 * max(diag) + 2 * math.sqrt(2) * READ_TOL
        checked += 1
        pairs.add((b, vb))
    assert checked >= 0.9 * len(lines)
    assert len(pairs) >= N_IMAGES * 3  # lines to globals and locals of every image
    flips = sum(is_flipped(batch.matrices[b, v]) for b, v in pairs)
    turns = {int(batch.rotation[b, v]) for b, v in pairs}
    if recipe == "clove":
        assert flips > 0  # the lines also join mirrored views correctly
    else:
        assert len(turns) > 2
    plt.close(fig)


def centres(size: int, stride: int) -> list[tuple[float, float]]:
    """Cell centres of a ``size`` px view, row-major: cell (i, j) at ((j + 0.5) s, (i + 0.5) s)."""
    n = size // stride
    return [((j + 0.5) * stride, (i + 0.5) * stride) for i in range(n) for j in range(n)]


@pytest.mark.parametrize("recipe", ["clove", "gtsa"])
def test_match_segments_are_m_from_its_definition(ramp_shards, recipe):
    """Every pair of cells whose original centres are closer than 0.7 x the larger cell diagonal, no other."""
    batch = picture_batch(ramp_shards, recipe, batch_size=2, seed=5)
    stride = RECIPES[recipe].feature_stride
    for b in range(2):
        for v in range(1, batch.num_views):
            size_a, size_b = batch.views[0].shape[-1], batch.views[v].shape[-1]
            got = match_segments(batch.matrices[b, 0], batch.matrices[b, v], (size_a,) * 2, (size_b,) * 2, stride, 0.7)
            want = []
            ca, cb = centres(size_a, stride), centres(size_b, stride)
            oa, ob = to_original(batch, b, 0, np.array(ca)), to_original(batch, b, v, np.array(cb))
            diag = [stride * np.sqrt((inverse(batch, b, u)[:2, :2] ** 2).sum()) for u in (0, v)]
            for i in range(len(ca)):
                for j in range(len(cb)):
                    if np.linalg.norm(oa[i] - ob[j]) < 0.7 * max(diag):
                        want.append((ca[i], cb[j]))
            assert sorted(map(tuple, got.reshape(-1, 4).tolist())) == sorted((*p, *q) for p, q in want)
            sub = match_segments(
                batch.matrices[b, 0], batch.matrices[b, v], (size_a,) * 2, (size_b,) * 2, stride, 0.7, max_lines=3
            )
            assert len(sub) == min(3, len(want))
            assert set(map(tuple, sub.reshape(-1, 4).tolist())) <= set(map(tuple, got.reshape(-1, 4).tolist()))


def test_aligned_grid_cells_show_the_same_place_in_both_views(ramp_shards):
    plt = pyplot()
    batch = picture_batch(ramp_shards, "gtsa", batch_size=N_IMAGES, seed=1)
    fig = aligned_grids_figure(batch, 10, 4, images=N_IMAGES, locals_shown=ALL_LOCALS)
    grids = {
        ax.get_gid(): next(c for c in ax.collections if c.get_gid() == "grid").get_offsets().data
        for ax in fig.axes
        if any(c.get_gid() == "grid" for c in ax.collections)
    }
    checked, total, turn_pairs, views = 0, 0, set(), ramps(batch)
    for gid, pts_s in grids.items():
        if not gid.startswith("view:"):
            continue
        b, v = parse(gid)
        pts_s, pts_t = np.asarray(pts_s, float), np.asarray(grids[f"teacher-of:{b}:{v}"], float)
        cells = 10 if v < 2 else 4
        assert pts_s.shape == pts_t.shape == (cells * cells, 2)
        grid = pts_s.reshape(cells, cells, 2)  # row-major in the student's own frame
        assert (np.diff(grid[..., 0], axis=1) > 0).all() and (np.diff(grid[..., 1], axis=0) > 0).all()
        keep = interior(batch, b, v, pts_s) & interior(batch, b, 0, pts_t)
        total += len(keep)
        os_, ot = read_back(views[v][b], pts_s[keep]), read_back(views[0][b], pts_t[keep])
        assert np.abs(os_ - ot).max() <= 2 * READ_TOL, f"image {b} view {v}"
        assert np.abs(ot - to_original(batch, b, 0, pts_t[keep])).max() <= READ_TOL
        checked += int(keep.sum())
        turn_pairs.add((int(batch.rotation[b, v]) - int(batch.rotation[b, 0])) % 4)
    assert checked >= 0.8 * total and total >= N_IMAGES * 9 * 16
    assert len(turn_pairs) > 2  # the teacher sees the grid turned by several different angles
    plt.close(fig)


def test_inverse_map_colours_are_the_original_coordinates(ramp_shards):
    plt = pyplot()
    batch = picture_batch(ramp_shards, "gtsa", batch_size=2, seed=2)
    fig = inverse_maps_figure(batch, images=2, locals_shown=ALL_LOCALS)
    maps = [ax for ax in fig.axes if (ax.get_gid() or "").startswith("map:")]
    assert len(maps) == 2 * batch.num_views
    for ax in maps:
        b, v = parse(ax.get_gid())
        colours = np.asarray(ax.images[0].get_array(), float)
        view = batch.views[v][b].double().numpy() + 0.5
        r = edge_ring(batch, b, v)
        inner = (slice(r, -r), slice(r, -r))
        assert np.abs(colours[..., 0][inner] * W - view[0][inner]).max() <= READ_TOL
        assert np.abs(colours[..., 1][inner] * H - view[1][inner]).max() <= READ_TOL
    plt.close(fig)


def test_view_labels_tell_flips_and_turns():
    for flip in (False, True):
        for turns in range(4):
            m = torch.from_numpy(view_matrix((10.0, 20.0, 50.0, 40.0), 32, flip, turns)).float()
            assert is_flipped(m) == flip
            label = view_label("local 1", m, turns, (32, 32))
            assert ("flip" in label) == flip
            assert (f"{90 * turns}°" in label) == (turns > 0)


def _png_has_content(path) -> None:
    assert path.stat().st_size > 10_000
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50


@pytest.mark.parametrize(
    "command",
    [["matches", "--recipe", "clove"], ["matches", "--recipe", "gtsa"], ["inverse-maps"], ["aligned-grids", "--palette"]],
)
def test_cli_writes_a_picture(ramp_shards, tmp_path, command, capsys):
    out = tmp_path / "p.png"
    assert main([*command, "--shards", ramp_shards, "--images", "2", "--locals", "2", "--out", str(out)]) == 0
    _png_has_content(out)
    assert str(out) in capsys.readouterr().out


def _bench_record(recipe: str, label: str, rate: float | None, **mode) -> dict:
    record = {
        "recipe": recipe,
        "label": label,
        "backend": "cpu",
        "batch_size": 32,
        "device": "cpu",
        "cpus": 2,
        "photometric": True,
        "normalize": True,
        "with_m": False,
        **mode,
    }
    if rate is not None:
        record["images_per_s"] = rate
    return record


def test_throughput_rows_group_runs_by_configuration():
    records = [
        _bench_record("clove", "cpu", 500.0),
        _bench_record("clove", "reference", 120.0),
        _bench_record("clove", "cpu", 600.0),
        _bench_record("clove", "cpu", 700.0),
        _bench_record("gtsa", "cpu", 530.0),
        _bench_record("clove", "cpu", 900.0, photometric=False),
        _bench_record("clove", "cpu", None),
    ]
    rows = throughput_rows(records)
    assert [(r.recipe, r.label, r.median) for r in rows] == [
        ("clove", "cpu", 900.0),
        ("clove", "cpu", 600.0),
        ("clove", "reference", 120.0),
        ("gtsa", "cpu", 530.0),
    ]
    assert sorted(rows[1].images_per_s) == [500.0, 600.0, 700.0]
    assert "photometric off" in rows[0].name and "photometric off" not in rows[1].name
    assert [r.recipe for r in throughput_rows(records, ["gtsa"])] == ["gtsa"]


def test_throughput_cli(tmp_path, capsys):
    bench = tmp_path / "bench.jsonl"
    records = [
        _bench_record("clove", "cpu", 544.0),
        _bench_record("clove", "reference", 124.0),
        _bench_record("two-view", "decode-only", 2462.0, normalize=False, photometric=False),
    ]
    bench.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    out = tmp_path / "t.png"
    assert main(["throughput", "--bench", str(bench), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    bench.write_text(json.dumps(records[0]) + "\n{not json\n")
    assert main(["throughput", "--bench", str(bench), "--out", str(out)]) == 2
    assert f"{bench}:2" in capsys.readouterr().err
    assert main(["throughput", "--bench", str(tmp_path / "missing.jsonl")]) == 2
