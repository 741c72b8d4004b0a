"""The extension path as docs/extending.md tells it: a toy method written in one new file and
registered with one line in ``model.registry.METHODS`` trains, resumes its config, exports and
evaluates, with no other file touched."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from evaluation.models import expand_spec
from model.registry import METHODS, MethodRecord
from tests.train.helpers import read_log, tiny_overrides
from train.config import ConfigError, load_config
from train.loop import train

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py

# the new file, written as docs/extending.md's "A method" says (module-level defaults, the contract)
TOY_METHOD = '''
"""Toy: a ResNet trunk whose pooled features of the two global views are pulled together."""
import torch
from torch import nn
import torch.nn.functional as F

from model.backbones import build_backbone
from model.contract import split_decay
from model.options import resolve_options
from model.resnet_export import export_resnet

TOY_DEFAULTS = {"backbone": "resnet18", "proj_dim": 16}


class Toy(nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.options = resolve_options("toy", TOY_DEFAULTS, options)
        self.backbone = build_backbone(self.options["backbone"], zero_init_residual=False)
        self.head = nn.Linear(self.backbone.out_channels, self.options["proj_dim"])

    def forward(self, batch):
        z = [F.normalize(self.head(self.backbone(v).mean(dim=(2, 3))), dim=1) for v in batch.views[:2]]
        loss = 2 - 2 * (z[0] * z[1]).sum(dim=1).mean()
        return {"loss": loss, "agreement": (z[0] * z[1]).sum(dim=1).mean().detach(), "embeddings": z[0].detach()}

    def teacher_momentum(self, step, total_steps):
        return 1.0

    def update_teacher(self, momentum):
        pass

    def set_epoch(self, epoch):
        pass

    def parameter_groups(self):
        return split_decay(self)

    def export(self, out_dir):
        return export_resnet(self.backbone, out_dir, method="toy")
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_method.py").write_text(textwrap.dedent(TOY_METHOD))
    monkeypatch.syspath_prepend(str(tmp_path))
    # the one registry line
    record = MethodRecord("toy_method:Toy", "toy_method:TOY_DEFAULTS", ("clove",), "torchvision_resnet")
    monkeypatch.setitem(METHODS, "toy", record)


def test_a_toy_method_trains_exports_and_evaluates_from_one_file_and_one_line(toy, photo_shards, tmp_path):
    out = tmp_path / "run"
    overrides = tiny_overrides(photo_shards, out, {"train.epochs": 1, "method.name": "toy", "method.options.proj_dim": 8})
    overrides = [o for o in overrides if not o.startswith(("method.options.proj_hidden", "optim.base_lr"))]
    result = train(load_config(None, overrides))
    losses = [r for r in read_log(out) if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4] and all("agreement" in r for r in losses)
    [(_, build)] = expand_spec(str(out / "exported"))  # the evaluation reads the export back
    features = build()
    trunk = torch.load(result.exported["torchvision"], weights_only=True)
    assert features.info["method"] == "toy" and set(features.strides) == {"layer3", "layer4"}
    assert torch.equal(features.body.state_dict()["resnet.layer4.1.conv2.weight"], trunk["layer4.1.conv2.weight"])
    # the record's rules apply to it like to every method: options checked, recipe refused in one line
    with pytest.raises(ConfigError, match="'method.options.proj_dims'; did you mean 'method.options.proj_dim'"):
        load_config(None, [*overrides, "method.options.proj_dims=4"])
    with pytest.raises(ConfigError, match="method 'toy' cannot train on recipe 'gtsa'"):
        load_config(None, [*overrides, "data.recipe=gtsa"])


def test_registering_a_method_imports_nothing_until_it_is_built():
    """A CLoVE run never imports timm (GTSA's and DINO's dependency): the registry is lazy."""
    code = (
        "import sys\nfrom model.registry import METHODS\nfrom train.config import load_config\n"
        "cfg = load_config(None, ['data.samples_per_epoch=64'])\n"
        "METHODS['clove']({'backbone': 'resnet18'})\n"
        "assert 'timm' not in sys.modules and 'model.gtsa' not in sys.modules, sorted(m for m in sys.modules if 'timm' in m)\n"
        "METHODS['gtsa']({'arch': 'vit_tiny_patch16_224', 'model_kwargs': {'depth': 1}})\n"
        "assert 'timm' in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
