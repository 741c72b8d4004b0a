"""The run log shows the loaders' data-quality counters: bad and recovered samples."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from train.logging import RunLogger, StepMeter


def test_log_record_carries_bad_and_recovered_samples(tmp_path):
    accelerator = SimpleNamespace(is_main_process=True, num_processes=1, device=torch.device("cpu"), log=lambda *a, **k: None)
    logger = RunLogger(accelerator, tmp_path, total_steps=2, start_step=0, progress=False, use_trackers=False)
    meter = StepMeter()
    meter.add_terms({"loss": torch.tensor(2.0)})
    meter.micro_batches = 1
    record = logger.log(meter, step=1, epoch=0, scalars={}, images_per_micro=4, bad_samples=2, recovered_samples=3)
    assert (record["bad_samples"], record["recovered_samples"]) == (2, 3)
    (line,) = (tmp_path / "log.jsonl").read_text().splitlines()
    assert json.loads(line)["recovered_samples"] == 3 and json.loads(line)["loss"] == 2.0
