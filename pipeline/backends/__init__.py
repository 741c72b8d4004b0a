"""The augmentation backends, one registration each, and the modules only one backend uses.

:data:`BACKENDS` maps each ``data.backend`` name to its builder, ``"module:function"`` with the
signature of :func:`pipeline.loader.build_loader`, imported only when chosen so that a machine
without DALI or a GPU can still use the others. A new backend is one module here and one line below
(docs/extending.md); the config's choices and the geometry oracle test read this dict.

- ``cpu``: ``cpu_backend`` (OpenCV in the loader workers) with ``photometric_cpu``;
- ``torch``: ``torch_backend`` (decode in the workers or nvJPEG, crops and colour on the device)
  with ``resample`` and ``photometric_gpu``;
- ``dali``: ``dali_backend`` (NVIDIA DALI) with the pipeline graph of ``dali_pipeline``.

What every backend shares stays in :mod:`pipeline`: the view sampler (``views``), the photometric
parameter draw (``photometric``), the per-sample prologue (``draw``), decoding (``decode``), the
shard reading and the worker loader (``source``, ``stream_loader``, ``shared_buffers``).
"""

BACKENDS: dict[str, str] = {
    "cpu": "pipeline.backends.cpu_backend:build_cpu_loader",
    "torch": "pipeline.backends.torch_backend:build_torch_loader",
    "dali": "pipeline.backends.dali_backend:build_dali_loader",
}
