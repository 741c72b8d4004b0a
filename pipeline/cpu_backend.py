"""The ``cpu`` backend: DataLoader workers decode, crop, resize and colour every view.

Per sample (in a worker): read the original size from the header, draw every view's geometry on
the *original* size (:func:`pipeline.views.sample_views`), pick the smallest DCT scale that still
leaves every crop at least its output size (:func:`pipeline.decode.choose_scale`), decode at that
scale, round each crop window to integer decoded pixels and recompute the view matrix exactly from
the rounded window composed with ``scale_matrix(scale)``, resize the crop with antialiasing (torch
uint8 ``interpolate`` on channels-last tensors: ~5x faster than PIL resize here), flip, rotate,
apply the photometric part (:mod:`pipeline.photometric_cpu`, OpenCV on HWC uint8 arrays). Batches
are collated in the worker into a :class:`~pipeline.batch.ViewBatch` of uint8 views in shared
memory; the main process pins them, moves them to ``device`` and normalises them there. When
``device`` is the CPU itself the workers normalise instead (in parallel, and not in the main
process that trains), by a lookup table while collating.

Stats (``loader.stats``, also on every batch): ``samples`` (decoded), ``bad_samples``,
``bad_shards`` (unreadable shards or tar members), ``dropped_batches`` (every sample bad), and
``decode_M/8``: how many images were decoded at ``M/8`` of their size (8 = full size).

Epochs, order and resumption (see :mod:`pipeline.source` for the stream itself):

* With ``samples_per_epoch`` set, ``len(loader) == samples_per_epoch // batch_size`` batches per
  rank per epoch. A bad sample (corrupt or truncated bytes, missing image, tiny or huge image) is
  counted in ``stats['bad_samples']`` and its place in the batch is taken by another good sample
  of the same batch, re-augmented with the bad position's own random draws, so batch size and
  batch count never depend on data quality.
* With ``samples_per_epoch=None`` each epoch is one exact pass; bad samples are dropped (batches
  can be shorter) so that every good sample appears exactly once. ``len()`` is undefined.
* Iterating to the end of an epoch advances to the next epoch (``set_epoch`` may also be called,
  as with a DistributedSampler). ``state_dict()`` holds the epoch and, per worker, how many stream
  positions and batches the *consumer* has received; after ``load_state_dict`` (same seed, shards,
  batch size and ``num_workers``) the next ``__iter__`` skips those positions by reading without
  decoding and continues with exactly the batches an uninterrupted run would have yielded, in the
  same order. Breaking out of a loop mid-epoch and iterating again resumes the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, get_worker_info

from pipeline.bad_samples import BadSampleGuard
from pipeline.batch import IMAGENET_MEAN, IMAGENET_STD, ViewBatch, normalize_views
from pipeline.config import LoaderConfig
from pipeline.decode import DecodeError, choose_scale, decode_image, decoded_window, image_size, is_jpeg
from pipeline.geometry import scale_matrix
from pipeline.photometric import draw_photometric
from pipeline.photometric_cpu import apply_photometric
from pipeline.shared_buffers import NO_SLOT, STORAGE_LIFETIME_TRACKED, BufferPool, allocate
from pipeline.source import BatchedStream, RawSample, StreamPlan, WorkerStart, plan_from_config
from pipeline.views import Recipe, build_recipe, sample_views, view_matrix

STAT_KEYS = ("samples", "bad_samples", "bad_shards", "dropped_batches")


def recipe_from_config(cfg: LoaderConfig) -> Recipe:
    """The view recipe a loader config asks for (photometrics stripped when ``cfg.photometric`` is off)."""
    if cfg.recipe == "two-view":
        recipe = build_recipe("two-view", size=cfg.global_size)
    else:
        kwargs: dict[str, Any] = dict(global_size=cfg.global_size, local_size=cfg.local_size)
        if cfg.num_local is not None:
            kwargs["num_local"] = cfg.num_local
        recipe = build_recipe(cfg.recipe, **kwargs)
    return recipe if cfg.photometric else recipe.without_photometric()


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


def resize_crop(image: torch.Tensor, window: tuple[int, int, int, int], size: int, mode: str) -> np.ndarray:
    """Crop ``image`` ``[h, w, 3]`` uint8 to integer ``window`` ``(x0, y0, w, h)`` and resize it to
    ``size x size`` (antialiased when shrinking, half-pixel centres as the geometry contract wants).

    Returns ``[size, size, 3]`` uint8, C-contiguous.
    """
    x0, y0, w, h = window
    crop = image[y0 : y0 + h, x0 : x0 + w]
    if (h, w) == (size, size):
        return np.ascontiguousarray(crop.numpy())
    # uint8 channels-last is torch's fast (SIMD) path for antialiased bilinear/bicubic, and its
    # output is channels-last too, i.e. an HWC array.
    crop = crop.permute(2, 0, 1).unsqueeze(0).contiguous(memory_format=torch.channels_last)
    out = F.interpolate(crop, size=(size, size), mode=mode, antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


def make_views(sample: RawSample, recipe: Recipe, rng: random.Random, reduced_decode: bool = True) -> SampleViews:
    """Decode one sample and produce all its views (geometry + photometric).

    Raises:
        DecodeError: the sample has no usable image (missing component, undecodable, bad size).
    """
    if sample.image is None:
        raise DecodeError(f"sample {sample.key!r} has no image component")
    width, height = image_size(sample.image)
    params = sample_views(width, height, recipe, rng)
    photometric = [draw_photometric(spec.photometric, rng) for spec in recipe.views]
    sizes = [spec.size for spec in recipe.views]
    num = choose_scale(width, height, params.windows, sizes) if reduced_decode and is_jpeg(sample.image) else 8
    decoded = decode_image(sample.image, num)
    image = torch.from_numpy(decoded.image)
    dsize = (decoded.image.shape[1], decoded.image.shape[0])
    to_decoded = scale_matrix(decoded.scale)
    views, matrices = [], []
    for v, spec in enumerate(recipe.views):
        window = decoded_window(tuple(params.windows[v]), decoded.scale, dsize)
        flip, turns = bool(params.flips[v]), int(params.turns[v])
        # Exact: the matrix of the window really cropped, composed with the decode scale.
        matrices.append(view_matrix(window, spec.size, flip, turns) @ to_decoded)
        view = resize_crop(image, window, spec.size, spec.interpolation)
        if flip:
            view = cv2.flip(view, 1)
        if turns:
            view = cv2.rotate(view, _ROTATE[turns])
        views.append(apply_photometric(view, photometric[v]))
    num = round(decoded.scale * 8)
    return SampleViews(views, np.stack(matrices), (width, height), params.turns, sample.label, sample.key, num)


# uint8 level -> ImageNet-normalised float32, per channel: normalising is one table lookup.
_NORMALIZE_LUT = ((np.arange(256, dtype=np.float64)[:, None] - np.array(IMAGENET_MEAN) * 255.0)
                  / (np.array(IMAGENET_STD) * 255.0)).astype(np.float32)  # [256, 3]
_NORMALIZE_LUT_HWC = _NORMALIZE_LUT.reshape(256, 1, 3)
_NORMALIZE_LUT_PLANES = [np.ascontiguousarray(_NORMALIZE_LUT[:, c]) for c in range(3)]


def _write_view(dst: np.ndarray, view: np.ndarray, channels_last: bool, normalize: bool) -> None:
    """Write one HWC uint8 view into its batch slot: ``dst`` is ``[S, S, 3]`` (channels-last
    buffer) or ``[3, S, S]``, uint8, or float32 normalised with ImageNet's mean/std."""
    if channels_last:
        if normalize:
            cv2.LUT(view, _NORMALIZE_LUT_HWC, dst=dst)
        else:
            np.copyto(dst, view)
    elif normalize:
        for c, plane in enumerate(cv2.split(view)):
            cv2.LUT(plane, _NORMALIZE_LUT_PLANES[c], dst=dst[c])
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

    def __init__(self, recipe: Recipe, *, reduced_decode: bool = True, fill_bad: bool = True, channels_last: bool = False,
                 normalize: bool = False):
        self.recipe = recipe
        self.reduced_decode = reduced_decode
        self.channels_last = channels_last
        self.normalize = normalize
        self.guard = BadSampleGuard(fill_bad)

    def _make(self, sample: RawSample, rng: random.Random) -> SampleViews:
        return make_views(sample, self.recipe, rng, self.reduced_decode)

    def __call__(self, samples: list[RawSample], rngs: list[random.Random], counters: dict[str, int]) -> ViewBatch | None:
        results = self.guard.run(self._make, samples, rngs, counters)
        if results is None:
            return None
        for r in results:  # how often reduced decoding kicks in (decode_8/8 = full size)
            name = f"decode_{r.decode_num}/8"
            counters[name] = counters.get(name, 0) + 1
        return collate_views(results, self.channels_last, self.normalize)


class StreamLoader:
    """A :class:`~pipeline.loader.ViewLoader` over a :class:`BatchedStream`, for any backend whose
    workers build the batches (``finish`` turns a worker batch into the final :class:`ViewBatch` on
    the device, e.g. normalising it).

    ``pooled``: for workers that allocate their batches with :func:`pipeline.shared_buffers.allocate`,
    a function giving a tensor on that memory of a received batch, so the loader can hand the
    buffer back to its worker once the batch is gone (None: no recycling).
    """

    def __init__(
        self,
        plan: StreamPlan,
        process_batch: Callable,
        finish: Callable[[Any], ViewBatch],
        *,
        num_workers: int,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        pooled: Callable[[Any], torch.Tensor] | None = None,
    ):
        self.plan = plan
        self.process_batch = process_batch
        self.finish = finish
        self.pooled = pooled
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.epoch = plan.epoch
        self._reset_position()
        self._totals = {k: 0 for k in STAT_KEYS}
        self._current: dict[int, dict[str, int]] = {}
        self._active: Iterator[ViewBatch] | None = None

    def _reset_position(self) -> None:
        self._starts = [WorkerStart() for _ in range(self.plan.num_workers)]
        self._consumed = 0
        self._next_worker = 0

    def __len__(self) -> int:
        if self.plan.batches_per_rank is None:
            raise TypeError("batches per epoch are data dependent in an exact pass (samples_per_epoch=None)")
        return self.plan.batches_per_rank

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._reset_position()

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "batches": self._consumed,
            "positions": [s.positions for s in self._starts],
            "worker_batches": [s.batches for s in self._starts],
            "next_worker": self._next_worker,
            "num_workers": self.plan.num_workers,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["num_workers"] != self.plan.num_workers:
            raise ValueError(
                f"data position saved with num_workers={state['num_workers']}, loader has {self.plan.num_workers}: "
                "the per-worker streams differ, so the position cannot be restored"
            )
        self.epoch = int(state["epoch"])
        self._consumed = int(state["batches"])
        self._starts = [WorkerStart(int(p), int(b)) for p, b in zip(state["positions"], state["worker_batches"])]
        self._next_worker = int(state["next_worker"])

    @property
    def stats(self) -> dict[str, int]:
        out = dict(self._totals)
        for counters in self._current.values():
            for k, v in counters.items():
                out[k] = out.get(k, 0) + v
        return out

    def _fold_stats(self) -> None:
        self._totals = self.stats
        self._current = {}

    def __iter__(self) -> Iterator[ViewBatch]:
        if self._active is not None:
            self._active.close()  # shut down the workers of an abandoned iteration first
        self._active = self._iterate()
        return self._active

    def _iterate(self) -> Iterator[ViewBatch]:
        self._fold_stats()
        if self.plan.batches_per_rank is not None and self._consumed >= self.plan.batches_per_rank:
            # the consumer took every batch but never exhausted the iterator: that epoch is over
            self.epoch += 1
            self._reset_position()
        plan = replace(self.plan, epoch=self.epoch)
        workers = self.num_workers
        # batches in flight per worker: prefetch_factor queued + the one the consumer holds + one spare
        recycle = self.pooled is not None and workers > 0 and STORAGE_LIFETIME_TRACKED
        pool = BufferPool(workers, self.prefetch_factor + 2) if recycle else None
        dataset = BatchedStream(plan, self.process_batch, [WorkerStart(s.positions, s.batches) for s in self._starts],
                                self._next_worker, pool)
        loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=workers,
            pin_memory=self.pin_memory,
            prefetch_factor=self.prefetch_factor if workers > 0 else None,
            persistent_workers=False,
        )
        for out, meta in loader:
            worker = meta["worker"]
            self._starts[worker] = WorkerStart(meta["position"], meta["batches"])
            self._current[worker] = meta["counters"]
            self._consumed += 1
            self._next_worker = (worker + 1) % plan.num_workers
            physical, slot = meta["buffer"]
            if pool is not None and slot != NO_SLOT:
                if self.pin_memory:  # the DataLoader already copied the batch into pinned memory
                    pool.release(physical, slot)
                else:
                    pool.release_when_freed(self.pooled(out).untyped_storage(), physical, slot)
            batch = self.finish(out)
            batch.stats = self.stats
            yield batch
        self._fold_stats()
        self.epoch += 1
        self._reset_position()


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
    cfg: LoaderConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
    recipe: Recipe | None = None,
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
    device = torch.device(device)
    # On a CPU "device" the workers normalise (in parallel, single-threaded); elsewhere they ship
    # uint8 (4x fewer bytes to pin and copy) and the device normalises.
    in_workers = cfg.normalize and device.type == "cpu"
    maker = CpuBatchMaker(recipe, reduced_decode=cfg.reduced_decode, fill_bad=plan.resampled,
                          channels_last=cfg.channels_last, normalize=in_workers)
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
