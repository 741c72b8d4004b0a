"""scripts/bench_colour_ceiling.py: its colour matrix is DALI's ``color_twist``, and the ops it
installs are the ones the cpu backend's forked workers run."""

from __future__ import annotations

import bench_colour_ceiling as ceiling
import numpy as np
import pytest
import torch

from pipeline.backends import cpu_backend
from pipeline.backends.dali_backend import INSTALL_HINT, dali_import_error
from pipeline.loader import build_loader
from pipeline.photometric import PhotometricParams
from tests.pipeline.helpers import backend_config, colour_photo_arrays, small_jpegs, write_shards


def _dali_colour_twist(images: list[np.ndarray], saturation: float, hue_turns: float) -> list[np.ndarray]:
    """DALI's own ``fn.color_twist`` on the CPU, as int64 arrays."""
    from nvidia.dali import fn, pipeline_def

    @pipeline_def(batch_size=len(images), num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(source=lambda: images, batch=True, layout="HWC")
        return fn.color_twist(x, saturation=saturation, hue=hue_turns * 360.0)

    p = pipe()
    p.build()
    (out,) = p.run()
    return [np.array(out[i]).astype(np.int64) for i in range(len(images))]


@pytest.mark.skipif(dali_import_error() is not None, reason=INSTALL_HINT)
def test_colour_twist_matrix_is_dalis(real_photos):
    """Within one level of DALI's own operator on real photos, for hue and saturation together."""
    images = colour_photo_arrays(real_photos, 3, (40, 30))
    for saturation, hue in ((1.0, 0.1), (0.6, -0.08), (1.4, 0.03)):
        params = PhotometricParams(jitter_order=(2, 3), saturation=saturation, hue=hue)
        for x, dali in zip(images, _dali_colour_twist(images, saturation, hue)):
            ours = ceiling.apply_dali_colour(x, params).astype(np.int64)
            assert np.abs(ours - dali).max() <= 1, (saturation, hue)
            assert np.abs(ours - x).max() > 8  # the op did something


def test_installed_ops_reach_the_forked_workers(real_photos, tmp_path, monkeypatch):
    """``main`` swaps the cpu backend's colour ops before the benchmark builds its loader; a marker
    op shows that the loader's worker processes run the swapped one."""
    monkeypatch.setattr(cpu_backend, "apply_photometric", cpu_backend.apply_photometric)  # restored after
    monkeypatch.setattr(ceiling, "apply_dali_colour", lambda view, p: np.full_like(view, 7))
    write_shards(tmp_path, small_jpegs(real_photos, 8), 1)
    seen = []

    def bench_main(argv):
        cfg = backend_config(str(tmp_path), "cpu", global_size=32, local_size=16, batch_size=4, num_workers=1, normalize=False)
        batch = next(iter(build_loader(cfg)))
        seen.extend(batch.views)
        return 0

    monkeypatch.setattr(ceiling.bench, "main", bench_main)
    assert ceiling.main([]) == 0
    assert seen and all(torch.all(v == 7) for v in seen)
