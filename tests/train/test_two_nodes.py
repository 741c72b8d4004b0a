"""Two machines simulated on one: two ``accelerate launch --num_machines 2`` commands on localhost,
machine ranks 0 and 1, one CPU process each (gloo). The ranks read different shards (split by
global rank), stay bit-identical, and a run stopped after step 2 and resumed on both machines ends
with the weights of the uninterrupted run."""

from __future__ import annotations

import socket
import subprocess

import torch

from pipeline.loader import build_loader
from tests.train.helpers import REPO, read_log, subprocess_env, tiny_overrides
from tests.train.test_distributed import ACCELERATE
from train.config import load_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_machines(out, photo_shards, extra: dict, *train_args: str) -> None:
    """One launch per machine rank, started together (they meet at the rendezvous)."""
    port = str(_free_port())
    procs = []
    for machine in (0, 1):
        cmd = [ACCELERATE, "launch", "--multi_gpu", "--num_machines", "2", "--machine_rank", str(machine)]
        cmd += ["--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", port]
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train", "--config", "/dev/null", *train_args]
        cmd += tiny_overrides(photo_shards, out, {"train.cpu": True, **extra})
        procs.append(
            subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def test_two_machines_split_shards_by_global_rank_and_resume_bit_identically(photo_shards, tmp_path):
    extra = {"train.epochs": 1, "data.samples_per_epoch": 12, "checkpoint.every_steps": 1}
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _two_machines(whole, photo_shards, extra)
    _two_machines(resumed, photo_shards, {**extra, "train.max_steps": 2})
    _two_machines(resumed, photo_shards, extra, "--resume", "auto")

    start = next(r for r in read_log(whole) if r.get("event") == "start")
    assert start["processes"] == 2
    final = {}
    for run in (whole, resumed):
        state = torch.load(run / "checkpoints" / "ckpt-00000003.pt", map_location="cpu", weights_only=True)
        ranks = state["ranks"]
        assert state["world_size"] == 2 and [r["rank"] for r in ranks] == [0, 1]
        assert ranks[0]["param_digest"] == ranks[1]["param_digest"]  # the machines agree
        final[run.name] = (ranks[0]["param_digest"], state["model"])
    assert final["whole"][0] == final["resumed"][0]
    for key, value in final["whole"][1].items():
        assert torch.equal(value, final["resumed"][1][key]), key
    # the premise: the two global ranks read different samples
    cfg = load_config(whole / "checkpoints" / "config.yaml", ["data.num_workers=0"])
    first = [next(iter(build_loader(cfg.data, rank=r, world_size=2))).keys for r in (0, 1)]
    assert first[0] != first[1]
