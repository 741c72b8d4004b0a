"""Run logging: tqdm bar, JSON-lines log, Accelerate trackers (TensorBoard), throughput figures.

The loop hands this module device tensors (loss terms) on every step and only the logging steps
turn them into numbers, so the hot loop never waits for the device except there.

Figures per logging window (the steps since the previous log line):

- ``images_per_s``: global images (batch x processes, every micro-batch) / wall time of the window;
- ``data_wait``: share of the window's wall time the host spent blocked in the loader's
  ``next()``. Without device syncs the host runs ahead of the GPU until its queue is full, so this
  is the share of time the *host* waited for data: near 0 means the loader keeps up;
- ``bad_samples``: the loaders' skipped-sample counters, summed over ranks;
- ``bad_shards`` (``empty_shards`` of them empty), ``bad_reads``, ``samples``: distinct unreadable
  shards, failed and good sample reads (:mod:`pipeline.data_issues`), summed over ranks;
- ``nonfinite_steps``: optimizer steps skipped for a non-finite loss or gradients (train/nonfinite.py);
- ``recovered_samples``: damaged JPEGs the loaders decoded only through the lenient fallback decoder
  (kept, but worth a look at the shards), summed over ranks.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from accelerate import Accelerator


def tensorboard_available() -> bool:
    """True when ``tensorboard`` or ``tensorboardX`` is importable."""
    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


class StepMeter:
    """Accumulates detached per-step terms on the device and the window's timing on the host."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.steps = 0
        self.micro_batches = 0
        self.data_time = 0.0
        self.start = time.perf_counter()

    def add_terms(self, terms: dict[str, Tensor]) -> None:
        """Add one optimizer step's terms (device scalars; no sync)."""
        for k, v in terms.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.steps += 1

    def reset(self) -> None:
        """Start a new window: clear the sums and counters, restart the clock."""
        self.__init__()


class RunLogger:
    """Writes the JSON-lines log and the trackers (main process) and drives the progress bar."""

    def __init__(
        self, accelerator: Accelerator, output_dir: Path, total_steps: int, start_step: int, progress: bool, use_trackers: bool
    ) -> None:
        self.accelerator = accelerator
        self.is_main = accelerator.is_main_process
        self.path = Path(output_dir) / "log.jsonl"
        self.use_trackers = use_trackers
        self.first: dict[str, Any] | None = None  # first and last logged window of this process's run
        self.last: dict[str, Any] | None = None
        self.steady = [0.0, 0.0, 0.0]  # images, seconds, seconds waiting for data: windows after the first
        self.bar = None
        if self.is_main and progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, smoothing=0.1)

    def event(self, **record: Any) -> None:
        """A non-step record (start, resume, checkpoint, end) in the JSON log."""
        if self.is_main:
            self._write({"time": time.time(), **record})

    def _write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def step_done(self) -> None:
        """Advance the progress bar by one optimizer step."""
        if self.bar is not None:
            self.bar.update(1)

    def log(
        self,
        meter: StepMeter,
        step: int,
        epoch: int,
        scalars: dict[str, float],
        images_per_micro: int,
        bad_samples: int,
        recovered_samples: int = 0,
        data_counts: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Reduce the window over ranks (one collective), write it, reset ``meter``. All ranks call it.

        ``bad_samples``, ``recovered_samples``: this rank's loader counters (cumulative);
        ``data_counts``: more cumulative loader counters (``bad_shards``, ...), summed over ranks
        into the record like them."""
        extra = sorted(data_counts or {})
        acc = self.accelerator
        names = sorted(meter.sums)
        elapsed = max(time.perf_counter() - meter.start, 1e-9)
        device = acc.device
        means = [meter.sums[k] / max(meter.steps, 1) for k in names]
        host = torch.tensor(
            [meter.data_time / elapsed, float(bad_samples), float(recovered_samples)] + [float(data_counts[k]) for k in extra],
            dtype=torch.float64,
        )
        packed = torch.cat([torch.stack(means).double().cpu() if means else torch.zeros(0, dtype=torch.float64), host])
        if acc.num_processes > 1:
            packed = acc.reduce(packed.to(device), reduction="sum").cpu()
        values = packed.tolist()  # the one device -> host read of the window
        n = acc.num_processes
        record: dict[str, Any] = {"step": step, "epoch": epoch}
        record.update({k: values[i] / n for i, k in enumerate(names)})
        record["data_wait"] = values[len(names)] / n
        record["bad_samples"] = int(values[len(names) + 1])
        record["recovered_samples"] = int(values[len(names) + 2])
        record.update({k: int(values[len(names) + 3 + i]) for i, k in enumerate(extra)})
        record["images_per_s"] = meter.micro_batches * images_per_micro / elapsed
        record.update(scalars)
        if self.first is not None:  # the first window holds worker start-up: leave it out of the average
            self.steady[0] += meter.micro_batches * images_per_micro
            self.steady[1] += elapsed
            self.steady[2] += meter.data_time
        meter.reset()
        self.first = self.first or record
        self.last = record
        if self.is_main:
            self._write({"time": time.time(), **record})
            if self.use_trackers:
                acc.log({k: v for k, v in record.items() if isinstance(v, (int, float)) and math.isfinite(v)}, step=step)
            if self.bar is not None:
                post = {k: f"{record[k]:.4g}" for k in names if k in record}
                post.update(
                    lr=f"{record.get('lr', 0):.3g}",
                    img_s=f"{record['images_per_s']:.1f}",
                    data=f"{100 * record['data_wait']:.0f}%",
                    bad=record["bad_samples"],
                )
                if record["recovered_samples"]:
                    post["recovered"] = record["recovered_samples"]
                self.bar.set_postfix(post, refresh=False)
        return record

    def summary(self) -> str:
        """``loss 99.92 (step 5) -> 99.39 (step 60); 11.8 images/s, 4% of step time waiting for data``."""
        if not self.first or "loss" not in self.first:
            return "no step logged"
        a, b = self.first, self.last
        text = f"loss {a['loss']:.4f} (step {a['step']}) -> {b['loss']:.4f} (step {b['step']})"
        images, seconds, wait = self.steady
        if seconds > 0:  # main process's view, after the first logging window
            text += f"; {images / seconds:.1f} images/s, {100 * wait / seconds:.0f}% of step time waiting for data"
        return text

    def close(self) -> None:
        """Close the progress bar."""
        if self.bar is not None:
            self.bar.close()
