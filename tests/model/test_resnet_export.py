"""ResNet export: torchvision strict loading with identical features; detectron2 names for ResNet-50;
backbone.json; the `python -m train.export` CLI on a checkpoint."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torchvision

from model.backbones import build_backbone
from model.registry import METHODS
from model.resnet_export import export_resnet
from tests.model.helpers import perturb
from train.checkpoint import save_checkpoint
from train.config import config_to_dict, load_config
from train.export import main


def _torchvision_c5(net: torchvision.models.ResNet, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def test_torchvision_export_loads_strictly_and_computes_the_same_features(tmp_path):
    backbone = METHODS["clove"]({"backbone": "resnet18", "proj_hidden": 64, "proj_dim": 32}).student.backbone
    perturb(backbone)
    written = export_resnet(backbone, tmp_path, "clove")
    assert set(written) == {"torchvision", "backbone"}  # basic blocks: no detectron2 file
    info = json.loads(written["backbone"].read_text())
    assert info == {"family": "torchvision_resnet", "arch": "resnet18", "weights": "resnet18_torchvision.pth", "method": "clove"}
    state = torch.load(written["torchvision"], map_location="cpu", weights_only=True)
    net = torchvision.models.resnet18()
    net.load_state_dict(state, strict=True)
    assert torch.count_nonzero(net.fc.weight) == 0  # placeholder head, documented
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    backbone.eval()
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(_torchvision_c5(net, x), backbone(x))


def _detectron2_names(blocks=(3, 4, 6, 3)) -> set[str]:
    """detectron2's ResNet parameter names, written from its module layout (BasicStem with conv1 +
    norm; BottleneckBlock conv1..conv3 each with .norm; a shortcut conv + norm in each stage's first
    block), independent of the code under test."""
    norm = ("weight", "bias", "running_mean", "running_var")
    names = {"stem.conv1.weight"} | {f"stem.conv1.norm.{n}" for n in norm}
    for stage, count in zip(range(2, 6), blocks):
        for b in range(count):
            convs = ["conv1", "conv2", "conv3"] + (["shortcut"] if b == 0 else [])
            for c in convs:
                names.add(f"res{stage}.{b}.{c}.weight")
                names |= {f"res{stage}.{b}.{c}.norm.{n}" for n in norm}
    return names


def test_detectron2_export_of_resnet50(tmp_path):
    backbone = build_backbone("resnet50")
    perturb(backbone, seed=2)
    written = export_resnet(backbone, tmp_path, "clove")
    assert written["torchvision"].name == "resnet50_torchvision.pth"
    with open(written["detectron2"], "rb") as f:
        ckpt = pickle.load(f)
    assert set(ckpt) == {"model", "__author__", "matching_heuristics"} and ckpt["matching_heuristics"] is True
    model = ckpt["model"]
    assert set(model) == _detectron2_names()
    tv = backbone.state_dict()
    pairs = {  # a few keys checked by hand against detectron2's converter
        "stem.conv1.weight": "conv1.weight",
        "stem.conv1.norm.running_var": "bn1.running_var",
        "res2.0.conv1.weight": "layer1.0.conv1.weight",
        "res2.0.shortcut.weight": "layer1.0.downsample.0.weight",
        "res2.0.shortcut.norm.bias": "layer1.0.downsample.1.bias",
        "res3.0.conv2.norm.weight": "layer2.0.bn2.weight",
        "res4.5.conv3.norm.running_mean": "layer3.5.bn3.running_mean",
        "res5.2.conv3.weight": "layer4.2.conv3.weight",
    }
    for d2, name in pairs.items():
        assert model[d2].dtype.name == "float32"
        assert (model[d2] == tv[name].numpy()).all(), d2
    # torchvision strides in the 3x3 conv, which is what STRIDE_IN_1X1: False tells detectron2
    assert model["res3.0.conv2.weight"].shape[-2:] == (3, 3)
    assert backbone.layer2[0].conv2.stride == (2, 2) and backbone.layer2[0].conv1.stride == (1, 1)
    text = written["detectron2_config"].read_text()
    assert "STRIDE_IN_1X1: False" in text and 'FORMAT: "RGB"' in text and "DEPTH: 50" in text
    assert "PIXEL_MEAN: [123.675, 116.280, 103.530]" in text and "PIXEL_STD: [58.395, 57.120, 57.375]" in text


def test_cli_exports_a_checkpoint(tmp_path, capsys):
    cfg = load_config(
        None,
        [
            "data.samples_per_epoch=64",
            "method.options.backbone=resnet18",
            "method.options.proj_hidden=64",
            "method.options.proj_dim=32",
        ],
    )
    method = METHODS["clove"](cfg.method.options)
    perturb(method.student, seed=3)
    path = save_checkpoint({"config": config_to_dict(cfg), "model": method.state_dict()}, tmp_path / "run" / "checkpoints", 7)
    assert main([str(path), str(tmp_path / "out")]) == 0
    assert "resnet18_torchvision.pth" in capsys.readouterr().out
    state = torch.load(tmp_path / "out" / "resnet18_torchvision.pth", weights_only=True)
    for k, v in method.student.backbone.state_dict().items():
        assert torch.equal(state[k], v), k
    assert main([str(tmp_path / "run"), str(tmp_path / "out2")]) == 0  # a run directory works too
    assert main([str(tmp_path / "missing.pt"), str(tmp_path / "out3")]) == 2


def test_non_resnet_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a torchvision ResNet layout"):
        export_resnet({"conv.weight": torch.zeros(1)}, tmp_path, "clove")
