"""The ``dali`` backend: NVIDIA DALI decodes and augments, the crop windows come out of the graph.

The graph lives in :mod:`pipeline.backends.dali_pipeline`; this module lists the shards, runs the pipeline
epoch by epoch for one rank, builds each view's matrix from the window/flip/turn outputs (one
vectorised product per batch, from the geometry builders every backend uses) and returns
:class:`~pipeline.batch.ViewBatch` on the training device.

Epochs. With ``samples_per_epoch`` the reader streams this rank's part of the shards without
end (reshuffled, moving to the next part after each pass) and every rank yields exactly
``samples_per_epoch // batch_size`` full batches, so no rank waits on another. Without it, one
epoch is one exact pass over this rank's part (DALI splits by sample, not by file, so the parts
differ by at most one sample): the reader pads its last batch and the padding is cut off here.

Limits of DALI, stated plainly:

* A corrupt image stops the pipeline (DALI decoders cannot skip a sample); the loader raises a
  one-line error naming the shards, and ``stats["bad_samples"]`` stays 0. Check shards first with
  ``python -m shards verify``. Samples with no image member are refused when the loader starts.
* Shards must be local files (or a mounted file system) with their index files beside them
  (``train-000000.tar`` + ``train-000000.idx``, as ``shards/`` writes them); URLs are not read.
* Checkpoints hold DALI's own pipeline checkpoint (reader position, shuffle buffer, RNG states of
  every operator), the seed the pipeline was built with, the epoch and the batches consumed. They
  resume the same stream exactly with the same config, rank and world size; loaded on another
  rank/world size they keep only the epoch and batch count (with a warning), since DALI's split
  of the samples changed. Load the state at an epoch's end too: without it, a restart begins a
  fresh stream (seeded by rank and epoch, so it does not replay epoch 0), at the start of this
  rank's part of the shards.
* DALI's randomness is one seeded stream across epochs: ``set_epoch`` does not reseed a running
  pipeline (it only finishes an abandoned exact epoch so that the next one is whole).
* ``decode`` and ``reduced_decode`` of the config do not apply: DALI decodes on the device it runs
  on, and decodes only the union of the view windows (ROI decoding) instead of DCT scaling.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from pipeline.batch import ViewBatch, normalize_views
from pipeline.config import LoaderConfig
from pipeline.geometry import hflip_matrix, rot90_matrix
from pipeline.views import Recipe, recipe_from_config
from shards.extensions import DALI_IMAGE_EXTS, LABEL_EXTS

if TYPE_CHECKING:
    from nvidia.dali.backend import TensorCPU, TensorListCPU, TensorListGPU

INSTALL_HINT = (
    "the dali backend needs NVIDIA DALI: pip install 'densessl[dali]' "
    "(nvidia-dali-cuda130 by default; install nvidia-dali-cuda120 instead for a CUDA 12 runtime)"
)


def dali_import_error() -> str | None:
    """None when DALI imports, else the one-line install hint (tests skip with it)."""
    try:
        import nvidia.dali  # noqa: F401
        from nvidia.dali.plugin.pytorch import torch_utils  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None


# ---------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------


def resolve_shards(spec: str) -> list[str]:
    """Shard spec (as :func:`pipeline.source.list_shards` reads it for every backend) -> local tars."""
    from pipeline.source import list_shards

    paths = list_shards(spec)
    remote = [p for p in paths if "://" in p or p.startswith("pipe:")]
    if remote:
        raise ValueError(f"the dali backend reads local (or mounted) shard files only, not {remote[0]!r}")
    packed = [p for p in paths if not p.endswith(".tar")]
    if packed:
        raise ValueError(f"the dali backend reads uncompressed .tar shards only, not {packed[0]!r}")
    return paths


def scan_indices(paths: list[str]) -> tuple[list[str], int, bool]:
    """Index paths beside the shards, total samples, and whether any sample has a label.

    Refuses (one line) a missing or malformed index and samples without an image member: DALI
    would fail on them mid-epoch instead.
    """
    from shards.index import index_path_for, sample_extensions

    index_paths, total, labels, no_image = [], 0, False, 0
    for path in paths:
        idx = index_path_for(path)
        if not idx.exists():
            raise ValueError(f"missing DALI index {idx} for {path}; write it with shards.index.write_index")
        samples = sample_extensions(idx)
        for exts in samples:
            no_image += exts.isdisjoint(DALI_IMAGE_EXTS)
            labels = labels or not exts.isdisjoint(LABEL_EXTS)
        total += len(samples)
        index_paths.append(str(idx))
    if no_image:
        raise ValueError(
            f"{no_image} samples in {len(paths)} shards have no image member "
            f"({'/'.join(DALI_IMAGE_EXTS)}); DALI cannot skip them: rebuild or filter the shards"
        )
    return index_paths, total, labels


def shard_samples(total: int, rank: int, world_size: int) -> int:
    """Samples DALI's reader gives shard ``rank`` of ``world_size`` (its split is by sample)."""
    return (total * (rank + 1)) // world_size - (total * rank) // world_size


# ---------------------------------------------------------------------------------------------
# Matrices
# ---------------------------------------------------------------------------------------------


def flip_turn_table(recipe: Recipe) -> np.ndarray:
    """``[V, 8, 3, 3]``: for view v and ``2 * ... = flip * 4 + turns``, ``rot90 @ hflip`` of the view.

    Built with :mod:`pipeline.geometry`'s builders in :func:`pipeline.views.view_matrix`'s order
    (resize, then flip, then rotate), so only the crop-resize part is left to vectorise.
    """
    table = np.zeros((len(recipe.views), 8, 3, 3))
    for v, spec in enumerate(recipe.views):
        for flip in (0, 1):
            for k in range(4):
                m = hflip_matrix(spec.size) if flip else np.eye(3)
                table[v, flip * 4 + k] = rot90_matrix(k, spec.size, spec.size) @ m
    return table


def view_matrices(windows: Tensor, flips: Tensor, turns: Tensor, sizes: Tensor, table: Tensor) -> Tensor:
    """Original -> view matrices of a batch, vectorised (same maths as ``views.view_matrix``).

    Args:
        windows: ``[B, V, 4]`` ``(x0, y0, w, h)`` in original pixels.
        flips, turns: ``[B, V]`` ints.
        sizes: ``[V]`` view sizes.
        table: ``[V, 8, 3, 3]`` from :func:`flip_turn_table`.

    Returns:
        ``[B, V, 3, 3]`` float32.
    """
    w = windows.double()
    sx = sizes.double() / w[..., 2]
    sy = sizes.double() / w[..., 3]
    crop = torch.zeros(*w.shape[:2], 3, 3, dtype=torch.float64, device=w.device)
    crop[..., 0, 0], crop[..., 0, 2] = sx, -sx * w[..., 0]
    crop[..., 1, 1], crop[..., 1, 2] = sy, -sy * w[..., 1]
    crop[..., 2, 2] = 1.0
    idx = flips.long() * 4 + turns.long() % 4
    post = table[torch.arange(table.shape[0], device=w.device), idx]  # [B, V, 3, 3]
    return (post @ crop).float()


# ---------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------


class DaliViewLoader:
    """:class:`pipeline.loader.ViewLoader` over a DALI pipeline, for one rank."""

    def __init__(
        self,
        cfg: LoaderConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        sampler: str | None = None,
    ):
        from pipeline.backends.dali_pipeline import GraphSpec, check_sampler

        sampler = sampler or cfg.dali_sampler

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.recipe = recipe_from_config(cfg)  # the same recipe as the cpu/torch backends
        check_sampler(sampler, self.recipe)
        self.paths = resolve_shards(cfg.shards)
        index_paths, self.total_samples, with_labels = scan_indices(self.paths)
        self.exact = cfg.samples_per_epoch is None
        if self.exact:
            self.epoch_samples = shard_samples(self.total_samples, rank, world_size)
            self.num_batches = math.ceil(self.epoch_samples / cfg.batch_size)
        else:
            self.epoch_samples = (cfg.samples_per_epoch // cfg.batch_size) * cfg.batch_size
            self.num_batches = cfg.samples_per_epoch // cfg.batch_size
        if self.num_batches == 0:
            raise ValueError(f"rank {rank} gets {self.epoch_samples} samples per epoch, less than one batch of {cfg.batch_size}")
        self.graph = GraphSpec(
            paths=tuple(self.paths),
            index_paths=tuple(index_paths),
            recipe=self.recipe,
            with_labels=with_labels,
            shard_id=rank,
            num_shards=world_size,
            shuffle_buffer=cfg.shuffle_buffer,
            exact_epochs=self.exact,
            gpu=self.device.type == "cuda",
            sampler=sampler,
            photometric=cfg.photometric,
            channels_last=cfg.channels_last,
        )
        self.sizes = torch.tensor(self.recipe.sizes, device=self.device)
        self.table = torch.from_numpy(flip_turn_table(self.recipe)).to(self.device)
        self._pipe = None
        self._checkpoint: bytes | None = None  # from load_state_dict, used at the next build
        self._build_seed: int | None = None  # the seed the pipeline was (or will be) built with
        self._epoch, self._consumed, self._samples = 0, 0, 0

    # -- protocol -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_batches

    @property
    def stats(self) -> dict[str, int]:
        """Counters in the cpu backend's keys; only ``samples`` moves."""
        # The cpu backend's counters; DALI cannot skip a bad sample or shard (it raises instead),
        # and never drops a batch, so only "samples" moves.
        return {"samples": self._samples, "bad_samples": 0, "bad_shards": 0, "dropped_batches": 0}

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` (no-op for the current one); an abandoned exact epoch is run out first, DALI is not reseeded."""
        if epoch == self._epoch:
            return
        if self.exact and 0 < self._consumed < self.num_batches:
            # The reader's epochs are padded to whole batches: finish the abandoned one so the
            # next epoch starts at the reader's epoch boundary.
            for _ in range(self.num_batches - self._consumed):
                self._run()
        self._epoch, self._consumed = epoch, 0

    def state_dict(self) -> dict:
        """Epoch, batches and samples consumed, rank, world size, build seed and DALI's pipeline checkpoint."""
        ckpt = self._pipe.checkpoint() if self._pipe is not None else self._checkpoint
        return {
            "backend": "dali",
            "epoch": self._epoch,
            "batches": self._consumed,
            "samples": self._samples,
            "rank": self.rank,
            "world_size": self.world_size,
            "seed": self._build_seed,
            "dali_checkpoint": ckpt,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; the pipeline is rebuilt from its checkpoint at the next iteration."""
        if state.get("backend") != "dali":
            raise ValueError(f"loader state from backend {state.get('backend')!r}, not dali")
        self._epoch, self._consumed, self._samples = state["epoch"], state["batches"], state["samples"]
        self._pipe = None  # rebuilt from the checkpoint on the next iteration
        if (state["rank"], state["world_size"]) != (self.rank, self.world_size):
            # DALI splits samples by rank: another split's reader position means nothing here.
            warnings.warn(
                f"DALI loader state of rank {state['rank']}/{state['world_size']} loaded on "
                f"{self.rank}/{self.world_size}: reader restarts, epoch and batch count kept",
                stacklevel=2,
            )
            self._checkpoint, self._build_seed = None, None
        else:
            self._checkpoint, self._build_seed = state["dali_checkpoint"], state["seed"]

    def __iter__(self) -> Iterator[ViewBatch]:
        if self._consumed >= self.num_batches:  # the previous epoch ran to its end
            self._epoch, self._consumed = self._epoch + 1, 0
        while self._consumed < self.num_batches:
            outputs = self._run()
            self._consumed += 1
            keep = self.cfg.batch_size
            if self.exact and self._consumed == self.num_batches:
                keep = self.epoch_samples - (self.num_batches - 1) * self.cfg.batch_size
            batch = self._to_batch(outputs, keep)
            self._samples += keep
            batch.stats = self.stats
            yield batch

    # -- internals ----------------------------------------------------------------------------

    def _build(self):
        from pipeline.backends.dali_pipeline import build_pipeline

        if self._checkpoint is None or self._build_seed is None:
            # A fresh stream: its seed depends on rank and on the epoch it starts in, so a run
            # restarted at epoch e without loader state does not replay epoch 0's augmentations.
            self._build_seed = (self.cfg.seed + 7919 * self.rank + 104729 * self._epoch) % 2**31
        self._pipe = build_pipeline(
            self.graph,
            batch_size=self.cfg.batch_size,
            num_threads=max(1, self.cfg.num_workers),
            device_id=self.device.index if self.device.type == "cuda" else None,
            seed=self._build_seed,
            prefetch_queue_depth=max(1, self.cfg.prefetch_factor),
            checkpoint=self._checkpoint,
        )

    def _run(self):
        if self._pipe is None:
            self._build()
        try:
            return self._pipe.run()
        except RuntimeError as err:
            self._pipe = None  # a failed DALI pipeline cannot run again
            raise RuntimeError(
                f"DALI stopped in epoch {self._epoch} after {self._samples} samples reading "
                f"{len(self.paths)} shards under {Path(self.paths[0]).parent} (corrupt or undecodable "
                f"image? DALI cannot skip samples; check the shards with `python -m shards verify`): "
                f"{_dali_reason(str(err))}"
            ) from None

    def _tensor(self, tl: TensorListCPU | TensorListGPU) -> Tensor:
        from nvidia.dali.plugin.pytorch.torch_utils import to_torch_tensor

        # With DALI's dynamic executor the outputs own their memory and dlpack is zero-copy.
        t = to_torch_tensor(tl.as_tensor(), copy=not self._pipe.exec_dynamic)
        return t

    def _to_batch(self, outputs: tuple[TensorListCPU | TensorListGPU, ...], keep: int) -> ViewBatch:
        from pipeline.backends.dali_pipeline import PARAM_OUTPUTS  # DALI is imported only when used

        nv = len(self.recipe.views)
        views = [self._tensor(o)[:keep] for o in outputs[:nv]]
        if self.cfg.channels_last:  # HWC from DALI: the permuted view *is* channels-last memory
            views = [v.permute(0, 3, 1, 2) for v in views]
        views = [v.to(self.device, non_blocking=True) for v in views]
        named = dict(zip(PARAM_OUTPUTS, outputs[nv : nv + len(PARAM_OUTPUTS)]))
        windows, flips, turns, shape = (
            torch.from_numpy(np.array(named[name].as_tensor())[:keep]).to(self.device)
            for name in ("windows", "flips", "turns", "shape")
        )
        matrices = view_matrices(windows, flips, turns, self.sizes, self.table)
        if self.cfg.normalize:
            views = normalize_views(views, channels_last=self.cfg.channels_last)
        info = named["source_info"]
        keys = [_key_of(info[i]) for i in range(keep)]
        labels = None
        if self.graph.with_labels:  # the class output follows the named ones
            cls = outputs[nv + len(PARAM_OUTPUTS)]
            labels = torch.tensor([_label_of(cls[i]) for i in range(keep)], dtype=torch.int64, device=self.device)
        return ViewBatch(
            views=views, matrices=matrices, image_size=shape[:, [1, 0]].long(), rotation=turns.long(), labels=labels, keys=keys
        )


def _dali_reason(message: str) -> str:
    """DALI's multi-line error -> ``fn.op: reason`` on one line."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    op = next((ln.split("`")[1] for ln in lines if ln.startswith("Error in") and ln.count("`") >= 2), "")
    after = lines[lines.index("encountered:") + 1 :] if "encountered:" in lines else lines
    reason = next((ln for ln in after if "pipeline" not in ln), lines[0] if lines else "unknown error")
    return f"{op}: {reason}" if op else reason


def _key_of(info: TensorCPU) -> str:
    """``/path/shard.tar:offset:dir/key.jpg`` (DALI's source_info) -> ``dir/key`` (WebDataset key)."""
    name = np.array(info).tobytes().decode("utf-8").rsplit(":", 1)[-1]
    dot = name.find(".", name.rfind("/") + 1)
    return name if dot < 0 else name[:dot]


def _label_of(cls: TensorCPU) -> int:
    try:  # as pipeline.source parses labels: anything but an integer is "no label"
        return int(np.array(cls).tobytes().decode("utf-8").strip())
    except (UnicodeDecodeError, ValueError):
        return -1


def build_dali_loader(
    cfg: LoaderConfig, *, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu"
) -> DaliViewLoader:
    """The ``dali`` backend's builder (see :func:`pipeline.loader.build_loader`)."""
    problem = dali_import_error()
    if problem:
        raise ImportError(problem)
    return DaliViewLoader(cfg, rank=rank, world_size=world_size, device=device)
