"""The ``cpu`` backend: DataLoader workers decode, crop, resize and colour every view.

Per sample (in a worker): the prologue shared with the torch backend (:mod:`pipeline.draw`: read
the original size from the header, draw every view's geometry on the *original* size and its
photometric parameters, decode at the smallest DCT scale that still leaves every crop at least its
output size), round each crop window to integer decoded pixels and recompute the view matrix exactly from
the rounded window composed with ``scale_matrix(scale)``, resize the crop with antialiasing (torch
uint8 ``interpolate`` on channels-last tensors: ~5x faster than PIL resize here), flip, rotate,
apply the photometric part (:mod:`pipeline.backends.photometric_cpu`: OpenCV on HWC uint8 arrays, the
hue a compiled numba pass). Batches
are collated in the worker into a :class:`~pipeline.batch.ViewBatch` of uint8 views in (recycled)
shared memory; the main process pins them, moves them to ``device`` and normalises them there. When
``device`` is the CPU itself the workers normalise instead (in parallel, and not in the main
process that trains), by a lookup table while collating.

Stats (``loader.stats``, also on every batch): ``samples`` (decoded), ``bad_samples``,
``bad_shards`` (unreadable shards or tar members), ``dropped_batches`` (every sample bad), and
``decode_M/8``: how many images were decoded at ``M/8`` of their size (8 = full size).

Epochs, bad-sample replacement and exact resumption: :class:`pipeline.stream_loader.StreamLoader`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from pipeline.backends.hue_kernel import compile_kernel
from pipeline.backends.photometric_cpu import apply_photometric
from pipeline.bad_samples import BadSampleGuard
from pipeline.batch import IMAGENET_MEAN, IMAGENET_STD, ViewBatch, normalize_views
from pipeline.config import LoaderConfig
from pipeline.decode import decoded_window
from pipeline.draw import decode_for_views, draw_views
from pipeline.geometry import scale_matrix
from pipeline.shared_buffers import allocate
from pipeline.source import RawSample, plan_from_config
from pipeline.stream_loader import StreamLoader
from pipeline.views import Recipe, recipe_from_config, view_matrix


@dataclass
class SampleViews:
    """Every view of one sample, as produced in a worker."""

    views: list[np.ndarray]  # V x [S_v, S_v, 3] uint8, C-contiguous (HWC)
    matrices: np.ndarray  # [V, 3, 3] float64, original -> view
    size: tuple[int, int]  # original (W, H)
    turns: np.ndarray  # [V] int64
    label: int
    key: str
    decode_num: int = 8  # decoded at decode_num / 8 of the original size


# quarter turns counter-clockwise (torch.rot90 / np.rot90 over (H, W)) as OpenCV rotation codes
_ROTATE = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def resize_crop(image: np.ndarray, window: tuple[int, int, int, int], size: int, mode: str) -> np.ndarray:
    """Crop ``image`` ``[h, w, 3]`` uint8 to integer ``window`` ``(x0, y0, w, h)`` and resize it to
    ``size x size`` (antialiased when shrinking, half-pixel centres as the geometry contract wants).

    Returns ``[size, size, 3]`` uint8, C-contiguous.
    """
    x0, y0, w, h = window
    crop = image[y0 : y0 + h, x0 : x0 + w]  # numpy slicing: a few us less per view than torch's
    if (h, w) == (size, size):
        return np.ascontiguousarray(crop)
    # uint8 channels-last is torch's fast (SIMD) path for antialiased bilinear/bicubic, and its
    # output is channels-last too, i.e. an HWC array.
    crop = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(crop, size=(size, size), mode=mode, antialias=True, align_corners=False)
    return out.numpy()[0].transpose(1, 2, 0)


def make_views(sample: RawSample, recipe: Recipe, rng: random.Random, reduced_decode: bool = True) -> SampleViews:
    """Decode one sample and produce all its views (geometry + photometric).

    Raises:
        DecodeError: the sample has no usable image (missing component, undecodable, bad size).
    """
    drawn = draw_views(sample, recipe, rng)
    decoded = decode_for_views(drawn, recipe, reduced_decode)
    image = decoded.image
    dsize = (decoded.image.shape[1], decoded.image.shape[0])
    params, photometric = drawn.params, drawn.photometric
    to_decoded = scale_matrix(decoded.scale)
    # At full size the drawn (integer) windows are the decoded ones and their matrices are exact.
    full_size = decoded.scale == 1.0
    views, matrices = [], []
    # Python ints once per sample: indexing numpy arrays element by element costs more
    windows, flips, all_turns = params.windows.astype(np.int64).tolist(), params.flips.tolist(), params.turns.tolist()
    for v, spec in enumerate(recipe.views):
        flip, turns = flips[v], all_turns[v]
        if full_size:
            window = tuple(windows[v])
            matrices.append(params.matrices[v])
        else:
            window = decoded_window(tuple(params.windows[v]), decoded.scale, dsize)
            # Exact: the matrix of the window really cropped, composed with the decode scale.
            matrices.append(view_matrix(window, spec.size, flip, turns) @ to_decoded)
        view = resize_crop(image, window, spec.size, spec.interpolation)
        if flip:
            view = cv2.flip(view, 1)
        if turns:
            view = cv2.rotate(view, _ROTATE[turns])
        views.append(apply_photometric(view, photometric[v]))
    num = round(decoded.scale * 8)
    return SampleViews(views, np.stack(matrices), drawn.size, params.turns, sample.label, sample.key, num)


# uint8 level -> ImageNet-normalised float32, per channel: (x - mean) / std = x * _NORM_SCALE + _NORM_OFFSET.
_NORM_SCALE = [1.0 / (255.0 * s) for s in IMAGENET_STD]
_NORM_OFFSET = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
# channels-last: one table lookup for all three channels (no per-channel scale in one OpenCV pass)
_NORMALIZE_LUT_HWC = (
    (np.arange(256, dtype=np.float64)[:, None] - np.array(IMAGENET_MEAN) * 255.0) / (np.array(IMAGENET_STD) * 255.0)
).astype(np.float32)[:, None, :]  # [256, 1, 3]


def _write_view(dst: np.ndarray, view: np.ndarray, channels_last: bool, normalize: bool) -> None:
    """Write one HWC uint8 view into its batch slot: ``dst`` is ``[S, S, 3]`` (channels-last
    buffer) or ``[3, S, S]``, uint8, or float32 normalised with ImageNet's mean/std."""
    if channels_last:
        if normalize:
            cv2.LUT(view, _NORMALIZE_LUT_HWC, dst=dst)
        else:
            np.copyto(dst, view)
    elif normalize:
        # per plane, one SIMD pass x * scale + offset straight to float32 (2x faster than a LUT)
        for c, plane in enumerate(cv2.split(view)):
            cv2.addWeighted(plane, _NORM_SCALE[c], plane, 0.0, _NORM_OFFSET[c], dst=dst[c], dtype=cv2.CV_32F)
    else:
        cv2.split(view, [dst[0], dst[1], dst[2]])


def collate_views(items: list[SampleViews], channels_last: bool = False, normalize: bool = False) -> ViewBatch:
    """Stack per-sample views into a :class:`ViewBatch` (``stats`` left empty).

    uint8 views by default; ``normalize=True`` writes ImageNet-normalised float32 instead (used
    when the training device is the CPU itself, so that the workers, not the main process, pay
    for it). Each view is written into its slot by one OpenCV pass (a copy, a channel split or a
    lookup table), straight into (recycled) shared memory in a worker.
    """
    sizes = [view.shape[0] for view in items[0].views]
    shapes = [(len(items), size, size, 3) if channels_last else (len(items), 3, size, size) for size in sizes]
    # one buffer for every view of the batch: recycled shared memory in a worker (pipeline.shared_buffers)
    buffers = allocate(shapes, torch.float32 if normalize else torch.uint8)
    views = []
    for v, buf in enumerate(buffers):
        slots = buf.numpy()
        for i, item in enumerate(items):
            _write_view(slots[i], item.views[v], channels_last, normalize)
        views.append(buf.permute(0, 3, 1, 2) if channels_last else buf)  # [B, 3, S, S] either way
    return ViewBatch(
        views=views,
        matrices=torch.from_numpy(np.stack([it.matrices for it in items])).float(),
        image_size=torch.tensor([it.size for it in items], dtype=torch.int64),
        rotation=torch.from_numpy(np.stack([it.turns for it in items])).long(),
        labels=torch.tensor([it.label for it in items], dtype=torch.int64),
        keys=[it.key for it in items],
    )


class CpuBatchMaker:
    """``process_batch`` of the cpu backend (runs in workers; see :class:`pipeline.source.BatchedStream`).

    ``fill_bad``: replace a bad sample by another good sample of the batch (or the worker's last
    good one) re-augmented with the bad position's RNG; otherwise drop it.
    """

    def __init__(
        self,
        recipe: Recipe,
        *,
        reduced_decode: bool = True,
        fill_bad: bool = True,
        channels_last: bool = False,
        normalize: bool = False,
    ):
        self.recipe = recipe
        self.reduced_decode = reduced_decode
        self.channels_last = channels_last
        self.normalize = normalize
        self.guard = BadSampleGuard(fill_bad)

    def _make(self, sample: RawSample, rng: random.Random) -> SampleViews:
        return make_views(sample, self.recipe, rng, self.reduced_decode)

    def __call__(self, samples: list[RawSample], rngs: list[random.Random], counters: dict[str, int]) -> ViewBatch | None:
        """The views of ``samples`` as one batch (bad ones replaced or dropped), None if none is usable; updates ``counters``."""
        results = self.guard.run(self._make, samples, rngs, counters)
        if results is None:
            return None
        for r in results:  # how often reduced decoding kicks in (decode_8/8 = full size)
            name = f"decode_{r.decode_num}/8"
            counters[name] = counters.get(name, 0) + 1
        return collate_views(results, self.channels_last, self.normalize)


def finish_on_device(device: torch.device | str, normalize: bool, channels_last: bool) -> Callable[[ViewBatch], ViewBatch]:
    """Main-process step: move a (pinned) uint8 batch to ``device`` and normalise it there."""
    device = torch.device(device)

    def finish(batch: ViewBatch) -> ViewBatch:
        if device.type != "cpu":
            batch = batch.to(device, non_blocking=True)
        if normalize:
            batch.views = normalize_views(batch.views, channels_last=channels_last)
        return batch

    return finish


def build_cpu_loader(
    cfg: LoaderConfig, *, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu", recipe: Recipe | None = None
) -> StreamLoader:
    """The cpu backend's :class:`~pipeline.loader.ViewLoader` for one rank (see the module docstring).

    ``recipe`` overrides the one named by ``cfg`` (custom view sets, tests); ``cfg.photometric``
    still switches its photometric part off.
    """
    if recipe is None:
        recipe = recipe_from_config(cfg)
    elif not cfg.photometric:
        recipe = recipe.without_photometric()
    plan = plan_from_config(cfg, rank, world_size)
    if any(spec.photometric is not None and spec.photometric.jitter[3] > 0 for spec in recipe.views):
        compile_kernel()  # here, once: forked workers inherit it (pipeline.backends.hue_kernel)
    device = torch.device(device)
    # On a CPU "device" the workers normalise (in parallel, single-threaded); elsewhere they ship
    # uint8 (4x fewer bytes to pin and copy) and the device normalises.
    in_workers = cfg.normalize and device.type == "cpu"
    maker = CpuBatchMaker(
        recipe, reduced_decode=cfg.reduced_decode, fill_bad=plan.resampled, channels_last=cfg.channels_last, normalize=in_workers
    )
    return StreamLoader(
        plan,
        maker,
        finish_on_device(device, cfg.normalize and not in_workers, cfg.channels_last),
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory and device.type == "cuda",
        prefetch_factor=cfg.prefetch_factor,
        pooled=_view_memory,
    )


def _view_memory(batch: ViewBatch) -> torch.Tensor:
    return batch.views[0]  # every view of a worker batch is carved from one buffer (collate_views)
