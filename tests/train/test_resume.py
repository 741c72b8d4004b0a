"""A run killed with SIGKILL mid-epoch and resumed with --resume auto repeats the uninterrupted run.

Real pieces only: the cpu backend on shards of real photos, CLoVE with a ResNet-18, LARS, one
worker, deterministic kernels. The comparison is exact (float equality of every step's loss and of
every tensor of the final checkpoint).
"""

from __future__ import annotations

import os

import torch

from tests.train.helpers import PYTHON, final_state, read_log, run_and_kill, run_train, step_losses, tiny_overrides

# 2 epochs x 4 steps, checkpoints every 3 steps: the kill lands after step 7 is logged, so the run
# resumes from step 6, in the middle of the second epoch (data position and RNG restored mid-epoch).
EXTRA = {"train.deterministic": True, "checkpoint.every_steps": 3}
KILL_AFTER_STEP = 7


def _cmd(shards, out, resume: bool = False) -> list[str]:
    cmd = [PYTHON, "-m", "train", "--config", os.devnull, *tiny_overrides(shards, out, EXTRA)]
    return cmd + (["--resume", "auto"] if resume else [])


def test_sigkill_and_resume_reproduces_the_uninterruptedrun_train(photo_shards, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train(_cmd(photo_shards, straight), timeout=240)
    run_and_kill(_cmd(photo_shards, killed), killed, KILL_AFTER_STEP, timeout=240)
    before = step_losses(read_log(killed))
    assert max(before) >= KILL_AFTER_STEP and max(before) < 8
    run_train(_cmd(photo_shards, killed, resume=True), timeout=240)

    records = read_log(killed)
    resumed = [r for r in records if r.get("event") == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] == 6, resumed  # mid-epoch: 6 = 4 + 2 of 4 steps
    expected = step_losses(read_log(straight))
    assert sorted(expected) == list(range(1, 9))
    got = step_losses(records)
    assert got == expected  # bit-identical losses at every step, including the re-run ones

    a, b = final_state(straight), final_state(killed)
    assert a["step"] == b["step"] == 8
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"])
