"""Two CPU processes under `accelerate launch` (gloo): equal steps per rank, identical weights.

Accelerate starts ``--cpu --num_processes 2`` as a single process unless mpirun is configured, so
the test uses ``--multi_gpu`` with no GPU visible plus ``train.cpu=true``: torchrun starts two
processes and Accelerate picks the gloo backend (DistributedType.MULTI_CPU).
"""

from __future__ import annotations

import socket
from pathlib import Path

import torch

from pipeline.loader import build_loader
from tests.train.helpers import PYTHON, read_log, run_in_repo, tiny_overrides
from train.config import load_config

ACCELERATE = str(Path(PYTHON).with_name("accelerate"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_stay_in_lockstep(photo_shards, tmp_path):
    out = tmp_path / "run"
    extra = {"train.cpu": True, "train.epochs": 1, "data.samples_per_epoch": 8, "checkpoint.every_steps": 1}
    cmd = [
        ACCELERATE,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "train",
        "--config",
        "/dev/null",
        *tiny_overrides(photo_shards, out, extra),
    ]
    done = run_in_repo(cmd, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "weights differ between ranks" not in done.stderr

    start = next(r for r in read_log(out) if r.get("event") == "start")
    assert start["processes"] == 2
    ckpts = sorted((out / "checkpoints").glob("ckpt-*.pt"))
    assert [p.name for p in ckpts] == ["ckpt-00000001.pt", "ckpt-00000002.pt"]
    initial = None
    for path in ckpts:
        state = torch.load(path, map_location="cpu", weights_only=True)
        ranks = state["ranks"]
        assert state["world_size"] == 2 and [r["rank"] for r in ranks] == [0, 1]
        # equal steps and batches on both ranks
        assert ranks[0]["step"] == ranks[1]["step"] == state["step"]
        assert ranks[0]["batch_in_epoch"] == ranks[1]["batch_in_epoch"] == state["step"]
        assert ranks[0]["loader"]["batches"] == ranks[1]["loader"]["batches"] == state["step"]
        # bit-identical parameters on both ranks after every step, and the steps changed them
        assert ranks[0]["param_digest"] == ranks[1]["param_digest"]
        assert ranks[0]["param_digest"] != initial
        initial = ranks[0]["param_digest"]
    # the premise: the two ranks read different samples (else equal weights would prove nothing)
    cfg = load_config(out / "checkpoints" / "config.yaml", ["data.num_workers=0"])  # same single stream
    first = [next(iter(build_loader(cfg.data, rank=r, world_size=2))).keys for r in (0, 1)]
    assert first[0] != first[1]
    logged = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2]
    assert abs(logged[0]["images_per_s"]) > 0 and logged[0]["bad_samples"] == 0
