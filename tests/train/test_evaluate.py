"""``python -m train.evaluate`` end to end on a tiny copy-paste set, and checkpoints through the
method contract's export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from shards.convert import ConvertOptions
from shards.copy_paste import build
from shards.photos import TUXPAINT_STAMPS
from train.checkpoint import save_checkpoint
from train.eval_data import DenseSplit, load_split, num_classes
from train.eval_models import expand_spec
from train.evaluate import EvalData, EvalSettings, layer_figures, main


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory, real_jpegs) -> Path:
    if not TUXPAINT_STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default not installed: run `bash scripts/setup.sh` as root")
    out = tmp_path_factory.mktemp("copy-paste")
    photos = sorted(real_jpegs, key=lambda p: (p.stat().st_size, p.name))[:8]
    build(out, train=8, test=4, size=64, seed=0, options=ConvertOptions(workers=1, progress=False), photos=photos)
    return out


def test_eval_data_reads_masks_and_labels(tiny_set):
    split = load_split(tiny_set, "test")
    assert split.images.shape == (4, 3, 64, 64) and split.images.dtype == torch.uint8
    assert split.masks.shape == (4, 64, 64)
    k = num_classes(tiny_set)
    assert 0 <= int(split.masks.min()) and int(split.masks.max()) < k
    for mask, label in zip(split.masks, split.labels):  # label = category of the largest object
        counts = torch.bincount(mask.reshape(-1), minlength=k)
        assert counts[label] > 0 and label != 0


def test_evaluate_end_to_end(tiny_set, tmp_path, capsys):
    export = tmp_path / "export"
    export.mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), export / "resnet18_torchvision.pth")
    (export / "backbone.json").write_text(
        json.dumps({"family": "torchvision_resnet", "arch": "resnet18", "weights": "resnet18_torchvision.pth", "method": "clove"})
    )
    out = tmp_path / "eval.jsonl"
    threads = torch.get_num_threads()
    try:
        rc = main(
            [
                "--checkpoint",
                "random:resnet18",
                "--checkpoint",
                str(export),
                "--data",
                str(tiny_set),
                "--quick",
                "--no-progress",
                "--threads",
                "1",
                "--out",
                str(out),
                "--bn",
                "both",
            ]
        )
    finally:
        torch.set_num_threads(threads)  # --threads sets the process-wide count
    assert rc == 0
    printed = capsys.readouterr().out
    assert "random resnet18 (torchvision init)" in printed and "clove resnet18" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # --bn both: each model as exported, then with BatchNorm statistics re-estimated on the train split
    assert [r["info"].get("init") for r in rows] == ["default", "default", None, None]
    assert [r["model"].endswith(" [BN re-estimated]") for r in rows] == [False, True, False, True]
    assert [r["info"].get("bn") for r in rows] == [None, "re-estimated on the train split (8 images)"] * 2
    assert rows[0]["figures"] != rows[1]["figures"]  # a random network's statistics are not its images'
    for row in rows:
        kinds = ("miou", "fgbg", "knn", "corr")
        assert set(row["figures"]) == {f"{m}/{layer}" for m in kinds for layer in ("layer3", "layer4")}
        assert all(0 <= v <= 1 for v in row["figures"].values())
        assert json.dumps(row, sort_keys=True) in printed  # the same JSON line on stdout
    assert main(["--checkpoint", "random:resnet18", "--data", str(tmp_path / "nothing"), "--quick"]) == 2
    assert main(["--checkpoint", str(tmp_path / "no-such-run"), "--data", str(tiny_set)]) == 2


def _split(masks: torch.Tensor) -> DenseSplit:
    n = masks.shape[0]
    return DenseSplit(torch.zeros(n, 3, *masks.shape[1:], dtype=torch.uint8), masks, masks.flatten(1).amax(1), [""] * n)


def test_object_probe_scores_the_two_classes():
    """fgbg/L is the probe's mIoU of object vs background, whatever the object's category: features
    that carry the object mask score 1, constant features score what all-background gives."""
    gen = torch.Generator().manual_seed(0)
    masks = [torch.zeros(16, 8, 8, dtype=torch.long) for _ in range(2)]
    for m in masks:
        for i in range(16):  # one object per image, of category 1, 2 or 3, at a random place
            y, x = torch.randint(0, 5, (2,), generator=gen).tolist()
            m[i, y : y + 3, x : x + 3] = 1 + i % 3
    train, test = _split(masks[0]), _split(masks[1])
    pairs = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    data = EvalData(train, test, 4, pairs, pairs, torch.eye(3, dtype=torch.float64)[None], "")
    settings = EvalSettings(pixels_per_image=64, probe_epochs=30)

    def carrying_mask(m):  # [N, 2, 8, 8]: object indicator and its complement, at stride 1
        fg = (m > 0).float()[:, None]
        return torch.cat([fg, 1 - fg], 1)

    f_tr, f_te = carrying_mask(train.masks), carrying_mask(test.masks)
    figures = layer_figures("L", 1, f_tr, f_te, f_te[:1], f_te[:1], data, settings)
    assert figures["fgbg/L"] == 1.0
    constant = layer_figures("L", 1, torch.ones(16, 2, 8, 8), torch.ones(16, 2, 8, 8), f_te[:1], f_te[:1], data, settings)
    background_share = float((test.masks == 0).double().mean())  # all background: IoU_bg = share, IoU_fg = 0
    assert constant["fgbg/L"] == pytest.approx(background_share / 2)


@pytest.fixture
def one_thread():
    """Small models only: one intra-op thread is much faster on a CPU shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_checkpoints_of_a_run_are_rebuilt_and_exported(tmp_path, one_thread):
    from model.registry import METHODS
    from train.config import config_to_dict, load_config

    cfg = load_config(
        None,
        [
            "method.options.backbone=resnet18",
            "method.options.proj_hidden=64",
            "method.options.proj_dim=32",
            "data.samples_per_epoch=64",
        ],
    )
    methods = {}
    for step in (3, 7):
        torch.manual_seed(step)
        methods[step] = METHODS["clove"](cfg.method.options)
        save_checkpoint(
            {"config": config_to_dict(cfg), "model": methods[step].state_dict(), "step": step},
            tmp_path / "run" / "checkpoints",
            step,
        )
    specs = expand_spec(str(tmp_path / "run"), all_steps=True)
    assert [Path(label).name for label, _ in specs] == ["ckpt-00000003.pt", "ckpt-00000007.pt"]
    newest = expand_spec(str(tmp_path / "run"))
    assert len(newest) == 1 and newest[0][0].endswith("ckpt-00000007.pt")
    x = torch.randn(1, 3, 64, 64)
    for (_, build_features), step in zip(specs, (3, 7)):
        features = build_features()
        assert features.name == f"clove resnet18 step {step}" and features.info["step"] == step
        trunk = methods[step].student.backbone.eval()
        with torch.no_grad():
            torch.testing.assert_close(features(x)["layer4"], trunk(x))  # the trained C5 map
