"""What the method records say is true of the methods they build."""

from __future__ import annotations

import json

import pytest

from model.contract import check_method
from model.features import FAMILIES
from model.registry import METHODS, method_defaults, method_record
from pipeline.views import RECIPES

VIT = {
    "arch": "vit_tiny_patch16_224",
    "img_size": 32,
    "model_kwargs": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
}
SMALL = {
    "clove": {"backbone": "resnet18", "proj_hidden": 16, "proj_dim": 8, "heads": 2},
    "byol": {"backbone": "resnet18", "proj_hidden": 16, "proj_dim": 8, "pred_hidden": 16},
    "gtsa": {**VIT, "proj_dim": 8, "pred_hidden": 8, "rot_hidden": 8, "rot_bottleneck": 8},
    "dino": {**VIT, "head_hidden_dim": 16, "head_bottleneck_dim": 8, "out_dim": 16},
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_record_builds_a_method_of_its_family_on_known_recipes(name, tmp_path):
    if METHODS[name].family == "timm_vit":
        pytest.importorskip("timm")
    record = METHODS[name]
    assert set(record.recipes) <= set(RECIPES) and record.family in FAMILIES
    assert method_defaults(name) == record.default_options() and method_defaults(name) is not method_defaults(name)
    method = record(SMALL[name])
    check_method(method)  # the contract's members
    method.export(tmp_path)
    assert json.loads((tmp_path / "backbone.json").read_text())["family"] == record.family


def test_an_unknown_method_names_the_registered_ones():
    with pytest.raises(ValueError, match="unknown method 'simclr'; choose one of"):
        method_record("simclr")
