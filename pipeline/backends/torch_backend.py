"""The ``torch`` backend: DataLoader workers read and draw, the device decodes and augments.

Per sample, in a worker: original size from the header, every view's geometry drawn on it
(:func:`pipeline.views.sample_views`), photometric parameters drawn by the shared law
(:func:`pipeline.photometric.draw_photometric`), then

* ``decode="gpu"``: the raw JPEG bytes are shipped as they are; the main process decodes the whole
  batch with nvJPEG in one ``torchvision.io.decode_jpeg(list, device=...)`` call. Non-JPEG and
  CMYK/YCCK JPEGs (which nvJPEG does not handle) are decoded in the worker instead; a JPEG nvJPEG
  rejects is retried alone, then decoded on the CPU, and dropped (counted in
  ``stats['gpu_decode_fallbacks']`` / ``stats['bad_samples']``) when nothing can decode it.
* ``decode="cpu"``: the worker decodes with libjpeg-turbo at the smallest DCT scale that still
  gives every view at least its size (:func:`pipeline.decode.choose_scale`) and ships uint8 pixels;
  the scale is folded into the maps exactly.
* ``decode="auto"``: ``gpu`` when ``device`` is a CUDA device, else ``cpu``.

On the device (main process): one coverage canvas + mip atlas per batch
(:func:`pipeline.backends.resample.build_atlas`), one ``grid_sample`` per view size driven by the matrices
(flip and quarter turns included — they are part of the map), the photometric chain batched with
per-sample parameters (:mod:`pipeline.backends.photometric_gpu`), then normalisation (or rounding to uint8
when ``cfg.normalize`` is off). The matrices are those the sampler drew: the views are rendered
from continuous maps, so no rounding of windows happens anywhere.

Epochs, order, bad samples and resumption are those of the cpu backend (its
:class:`~pipeline.stream_loader.StreamLoader` and :mod:`pipeline.source`): with
``samples_per_epoch`` set a bad sample found in a worker is replaced by another sample of the batch
re-augmented with the bad position's draws; one found only on the device (bytes that pass the
header check but decode nowhere) is dropped from its batch.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simplejpeg
import torch
from torch import Tensor

from pipeline.backends.photometric_gpu import PhotometricArrays, augment
from pipeline.backends.resample import build_atlas, render_views, scale_matrices
from pipeline.bad_samples import BadSampleGuard
from pipeline.batch import IMAGENET_MEAN, IMAGENET_STD, ViewBatch
from pipeline.config import LoaderConfig
from pipeline.decode import DecodeError, decode_image, is_jpeg
from pipeline.draw import decode_for_views, draw_views
from pipeline.photometric import PhotometricParams
from pipeline.shared_buffers import ALIGN, allocate
from pipeline.source import RawSample, plan_from_config
from pipeline.stream_loader import StreamLoader
from pipeline.views import Recipe, recipe_from_config


@dataclass
class Drawn:
    """One sample as a worker ships it: pixels or bytes, plus everything drawn for its views."""

    data: np.ndarray  # [h, w, 3] uint8 decoded pixels, or [n] uint8 encoded JPEG bytes
    encoded: bool
    scale: float  # decoded pixels per original pixel (1.0 for bytes: nvJPEG decodes full size)
    matrices: np.ndarray  # [V, 3, 3] float64
    turns: np.ndarray  # [V] int64
    photometric: list[PhotometricParams]
    size: tuple[int, int]  # original (W, H)
    label: int
    key: str
    nbytes: int  # compressed size read from the shard


@dataclass
class RawBatch:
    """A worker's batch for the device: variable-size images, so not stacked but packed back to
    back in one buffer — one piece of (recycled) shared memory per batch, one copy to pin."""

    buffer: Tensor  # [N] uint8
    spans: list[tuple[int, tuple[int, ...]]]  # per sample: offset in ``buffer``, shape of its data
    encoded: list[bool]
    scales: Tensor  # [B] float64
    matrices: Tensor  # [B, V, 3, 3] float64
    turns: Tensor  # [B, V] int64
    photometric: list[PhotometricArrays]  # per view group (view_groups), rows b-major: b * Vg + k
    image_size: Tensor  # [B, 2] int64
    labels: Tensor  # [B] int64
    keys: list[str]
    nbytes: int
    extra: dict = field(default_factory=dict)

    def item(self, i: int, buffer: Tensor | None = None) -> Tensor:
        """Sample ``i``'s data, a view of ``buffer`` (default: this batch's): ``[n]`` uint8 JPEG
        bytes or ``[h, w, 3]`` uint8 pixels."""
        offset, shape = self.spans[i]
        return (self.buffer if buffer is None else buffer)[offset : offset + int(np.prod(shape))].view(shape)

    def pin_memory(self) -> RawBatch:
        """Called by DataLoader(pin_memory=True): pinned tensors copy to the GPU asynchronously."""
        for name in ("buffer", "matrices", "turns", "image_size", "labels"):
            setattr(self, name, getattr(self, name).pin_memory())
        return self


def _gpu_decodable(data: bytes) -> bool:
    """A JPEG nvJPEG can decode to RGB (baseline/progressive YCbCr or grayscale; not CMYK/YCCK)."""
    if not is_jpeg(data):
        return False
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
    except ValueError:
        return False
    return colorspace not in ("CMYK", "YCCK")


def draw_sample(sample: RawSample, recipe: Recipe, rng: random.Random, gpu_decode: bool, reduced_decode: bool) -> Drawn:
    """Draw one sample's views and decode it (or not) for the device. Raises :class:`DecodeError`."""
    drawn = draw_views(sample, recipe, rng)
    common = dict(
        matrices=drawn.params.matrices,
        turns=drawn.params.turns,
        photometric=drawn.photometric,
        size=drawn.size,
        label=sample.label,
        key=sample.key,
        nbytes=len(drawn.image),
    )
    if gpu_decode and _gpu_decodable(drawn.image):
        return Drawn(data=np.frombuffer(drawn.image, dtype=np.uint8), encoded=True, scale=1.0, **common)
    decoded = decode_for_views(drawn, recipe, reduced_decode)
    return Drawn(data=decoded.image, encoded=False, scale=decoded.scale, **common)


def view_groups(recipe: Recipe) -> list[tuple[int, str, list[int]]]:
    """Views rendered together: ``(size, interpolation, view indices)``, in recipe order."""
    groups: dict[tuple[int, str], list[int]] = {}
    for v, spec in enumerate(recipe.views):
        groups.setdefault((spec.size, spec.interpolation), []).append(v)
    return [(size, interp, idx) for (size, interp), idx in groups.items()]


def collate_drawn(items: list[Drawn], groups: list[tuple[int, str, list[int]]]) -> RawBatch:
    """Collate in the worker: every sample's data into one buffer (recycled shared memory in a
    worker, :mod:`pipeline.shared_buffers`), photometric parameters packed per view group."""
    photometric = [PhotometricArrays.from_params([it.photometric[v] for it in items for v in idx]) for _, _, idx in groups]
    spans, total = [], 0
    for it in items:
        spans.append((total, it.data.shape))
        total += -(-it.data.size // ALIGN) * ALIGN
    (buffer,) = allocate([(total,)], torch.uint8)
    flat = buffer.numpy()
    for (offset, _), it in zip(spans, items):
        flat[offset : offset + it.data.size] = it.data.reshape(-1)
    return RawBatch(
        buffer=buffer,
        spans=spans,
        encoded=[it.encoded for it in items],
        scales=torch.tensor([it.scale for it in items], dtype=torch.float64),
        matrices=torch.from_numpy(np.stack([it.matrices for it in items])),
        turns=torch.from_numpy(np.stack([it.turns for it in items])).long(),
        photometric=photometric,
        image_size=torch.tensor([it.size for it in items], dtype=torch.int64),
        labels=torch.tensor([it.label for it in items], dtype=torch.int64),
        keys=[it.key for it in items],
        nbytes=sum(it.nbytes for it in items),
    )


class TorchBatchMaker:
    """``process_batch`` of the torch backend (runs in workers). Bad samples are handled as in the
    cpu backend: with ``fill_bad`` another good sample of the batch (or the worker's last good one)
    is drawn again with the bad position's RNG; otherwise the bad sample is dropped."""

    def __init__(self, recipe: Recipe, *, gpu_decode: bool, reduced_decode: bool = True, fill_bad: bool = True):
        self.recipe = recipe
        self.gpu_decode = gpu_decode
        self.reduced_decode = reduced_decode
        self.groups = view_groups(recipe)
        self.guard = BadSampleGuard(fill_bad)

    def _draw(self, sample: RawSample, rng: random.Random) -> Drawn:
        return draw_sample(sample, self.recipe, rng, self.gpu_decode, self.reduced_decode)

    def __call__(self, samples: list[RawSample], rngs: list[random.Random], counters: dict[str, int]) -> RawBatch | None:
        """Draw and collate ``samples`` into one :class:`RawBatch`; None when none is usable. Updates ``counters``."""
        results = self.guard.run(self._draw, samples, rngs, counters)
        return None if results is None else collate_drawn(results, self.groups)


# ---------------------------------------------------------------------------------------------
# Main process: decode on the device, resample, photometric, normalise
# ---------------------------------------------------------------------------------------------


def _cpu_decode_to(data: Tensor, device: torch.device) -> Tensor:
    """Fallback for bytes nvJPEG refused: libjpeg-turbo/PIL on the CPU, full size. ``[3, h, w]``."""
    decoded = decode_image(bytes(data.numpy()), 8)
    return torch.from_numpy(decoded.image).to(device).permute(2, 0, 1)


def decode_on_device(batch: RawBatch, device: torch.device, counters: dict[str, int]) -> list[Tensor | None]:
    """``[3, h, w]`` uint8 images on ``device`` (None for a sample nothing could decode).

    Encoded samples go through one batched nvJPEG call; if it fails, each is retried alone, then
    decoded on the CPU.
    """
    out: list[Tensor | None] = [None] * len(batch.spans)
    enc = [i for i, e in enumerate(batch.encoded) if e]
    if not enc:  # every sample is pixels decoded in a worker: one copy, then views on the device
        on_device = batch.buffer.to(device, non_blocking=True)
        return [batch.item(i, on_device).permute(2, 0, 1) for i in range(len(batch.spans))]
    for i, e in enumerate(batch.encoded):
        if not e:  # HWC pixels from a worker -> CHW view on the device
            out[i] = batch.item(i).to(device, non_blocking=True).permute(2, 0, 1)
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision >= 0.29 points to TorchCodec
        warnings.simplefilter("ignore", UserWarning)  # e.g. nvjpeg leak warnings for old CUDA
        try:
            decoded = decode_jpeg([batch.item(i) for i in enc], mode=ImageReadMode.RGB, device=device)
            for i, img in zip(enc, decoded):
                out[i] = img
            return out
        except RuntimeError:
            pass  # one bad JPEG fails the whole batched call: find it
        for i in enc:
            try:
                out[i] = decode_jpeg(batch.item(i), mode=ImageReadMode.RGB, device=device)
                continue
            except RuntimeError:
                counters["gpu_decode_fallbacks"] = counters.get("gpu_decode_fallbacks", 0) + 1
            try:
                out[i] = _cpu_decode_to(batch.item(i), device)
            except DecodeError:
                counters["bad_samples"] = counters.get("bad_samples", 0) + 1
    return out


class DeviceAugmenter:
    """Main-process step of the torch backend: :class:`RawBatch` -> :class:`ViewBatch` on ``device``."""

    def __init__(self, recipe: Recipe, device: torch.device | str, *, normalize: bool = True, channels_last: bool = False):
        self.recipe = recipe
        self.device = torch.device(device)
        self.normalize = normalize
        self.channels_last = channels_last
        self.groups = view_groups(recipe)
        self.counters: dict[str, int] = {}
        self.any_photometric = any(s.photometric is not None for s in recipe.views)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255.0
        self._inv_std = 1.0 / (torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255.0)

    def __call__(self, raw: RawBatch) -> ViewBatch:
        """Decode, resample, augment and normalise (or round to uint8) ``raw`` on the device."""
        images = decode_on_device(raw, self.device, self.counters)
        keep = [i for i, im in enumerate(images) if im is not None]
        if not keep:
            raise RuntimeError(f"no sample of a batch could be decoded on {self.device} or the CPU (keys {raw.keys[:3]} ...)")
        if len(keep) < len(images):  # dropped: nothing could decode them
            raw = _select(raw, keep, self.groups)
            images = [images[i] for i in keep]
        # Maps are composed on the host from the CPU matrices (no device round trip).
        atlas = build_atlas(images, raw.matrices, scale_matrices(raw.scales))
        b = len(images)
        views: list[Tensor | None] = [None] * len(self.recipe.views)
        for g, (size, interp, idx) in enumerate(self.groups):
            out = render_views(atlas, raw.matrices[:, idx], size, interp)  # [B, Vg, 3, S, S]
            flat = out.reshape(b * len(idx), 3, size, size)  # row b * Vg + k, as the parameters
            if self.any_photometric:
                flat = augment(flat, raw.photometric[g])
            flat = flat.clamp_(0, 255)
            flat = flat.sub_(self._mean).mul_(self._inv_std) if self.normalize else flat.round_().to(torch.uint8)
            out = flat.reshape(b, len(idx), 3, size, size)
            for k, v in enumerate(idx):
                view = out[:, k]
                views[v] = view.contiguous(memory_format=torch.channels_last) if self.channels_last else view.contiguous()

        def move(t: Tensor) -> Tensor:
            return t.to(self.device, non_blocking=True)

        return ViewBatch(
            views=views,  # type: ignore[arg-type]
            matrices=move(raw.matrices).float(),
            image_size=move(raw.image_size),
            rotation=move(raw.turns),
            labels=move(raw.labels),
            keys=raw.keys,
        )


def _select(raw: RawBatch, keep: list[int], groups: list[tuple[int, str, list[int]]]) -> RawBatch:
    """The samples ``keep`` of a batch (photometric rows ``b * Vg + k`` selected per group)."""
    idx = torch.tensor(keep, dtype=torch.long)
    photometric = []
    for (_, _, views), arrays in zip(groups, raw.photometric):
        rows = (idx[:, None] * len(views) + torch.arange(len(views))).flatten()
        photometric.append(PhotometricArrays(*(getattr(arrays, f)[rows] for f in PhotometricArrays.FIELDS)))
    return RawBatch(
        buffer=raw.buffer,
        spans=[raw.spans[i] for i in keep],
        encoded=[raw.encoded[i] for i in keep],
        scales=raw.scales[idx],
        matrices=raw.matrices[idx],
        turns=raw.turns[idx],
        photometric=photometric,
        image_size=raw.image_size[idx],
        labels=raw.labels[idx],
        keys=[raw.keys[i] for i in keep],
        nbytes=raw.nbytes,
    )


class TorchLoader:
    """The torch backend's :class:`~pipeline.loader.ViewLoader`: the cpu backend's
    :class:`StreamLoader` (stream, epochs, data position) with the device step as its ``finish``;
    its stats add what only the device step can find (JPEGs that nvJPEG and the CPU both refuse)."""

    def __init__(self, stream: StreamLoader, augmenter: DeviceAugmenter):
        self.stream = stream
        self.augmenter = augmenter

    def __iter__(self) -> Iterator[ViewBatch]:
        for batch in self.stream:
            batch.stats = self.stats
            yield batch

    def __len__(self) -> int:
        return len(self.stream)

    def set_epoch(self, epoch: int) -> None:
        """As :meth:`StreamLoader.set_epoch`."""
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict:
        """The stream's data position (:meth:`StreamLoader.state_dict`)."""
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """As :meth:`StreamLoader.load_state_dict`."""
        self.stream.load_state_dict(state)

    @property
    def epoch(self) -> int:
        """The epoch the stream is in."""
        return self.stream.epoch

    @property
    def issues(self):  # noqa: ANN201 - pipeline.data_issues.IssueSets
        """The stream's distinct bad samples and shards."""
        return self.stream.issues

    @property
    def shard_count(self) -> int:
        """How many shards the loader's spec names."""
        return self.stream.shard_count

    @property
    def stats(self) -> dict[str, int]:
        """The stream's counters plus the device step's (e.g. JPEGs neither nvJPEG nor the CPU decoded)."""
        out = dict(self.stream.stats)
        for k, v in self.augmenter.counters.items():
            out[k] = out.get(k, 0) + v
        return out


def resolve_decode(decode: str, device: torch.device) -> str:
    """``auto`` -> ``gpu`` on a CUDA device, else ``cpu``; ``gpu`` without CUDA is an error."""
    if decode not in ("auto", "gpu", "cpu"):
        raise ValueError(f"decode must be auto, gpu or cpu, got {decode!r}")
    if decode == "auto":
        return "gpu" if device.type == "cuda" and torch.cuda.is_available() else "cpu"
    if decode == "gpu" and device.type != "cuda":
        raise ValueError(f"decode='gpu' needs a CUDA device (nvJPEG), got device={device}; use decode='cpu' or 'auto'")
    return decode


def build_torch_stream(
    cfg: LoaderConfig,
    *,
    gpu_decode: bool,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
    finish: Callable[[RawBatch], Any] = lambda raw: raw,
) -> StreamLoader:
    """The workers' half of the torch backend: a stream of :class:`RawBatch` (bytes for nvJPEG when
    ``gpu_decode``, else pixels), each passed through ``finish`` in the main process."""
    device = torch.device(device)
    plan = plan_from_config(cfg, rank, world_size)
    maker = TorchBatchMaker(
        recipe_from_config(cfg), gpu_decode=gpu_decode, reduced_decode=cfg.reduced_decode, fill_bad=plan.resampled
    )
    return StreamLoader(
        plan,
        maker,
        finish,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory and device.type == "cuda",
        prefetch_factor=cfg.prefetch_factor,
        pooled=_raw_memory,
    )


def _raw_memory(batch: RawBatch) -> Tensor:
    return batch.buffer


def build_torch_loader(
    cfg: LoaderConfig, *, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu"
) -> TorchLoader:
    """The torch backend's :class:`~pipeline.loader.ViewLoader` for one rank (module docstring)."""
    device = torch.device(device)
    mode = resolve_decode(cfg.decode, device)
    augmenter = DeviceAugmenter(recipe_from_config(cfg), device, normalize=cfg.normalize, channels_last=cfg.channels_last)
    stream = build_torch_stream(cfg, gpu_decode=mode == "gpu", rank=rank, world_size=world_size, device=device, finish=augmenter)
    return TorchLoader(stream, augmenter)
