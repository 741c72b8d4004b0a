"""Backbones, projector, contextual attention, EMA schedule and the method registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from model.backbones import build_backbone
from model.contextual import ContextualAttention
from model.contract import Method
from model.ema import ema_update
from model.heads import DenseProjector
from model.registry import METHODS, method_defaults
from model.schedule import cosine


@pytest.fixture
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.mark.parametrize("name,channels,block_bn", [("resnet18", 512, "bn2"), ("resnet50", 2048, "bn3")])
def test_backbone_c5_zero_init_and_names(no_downloads, name, channels, block_bn):
    trunk = build_backbone(name)
    with torch.no_grad():
        assert trunk.train()(torch.randn(2, 3, 64, 64)).shape == (2, channels, 2, 2)
    blocks = [blk for layer in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4) for blk in layer]
    assert blocks and all(torch.count_nonzero(getattr(b, block_bn).weight) == 0 for b in blocks)
    # torchvision names: the trunk's keys are exactly a torchvision ResNet's without the classifier
    ref = getattr(torchvision.models, name)(weights=None).state_dict()
    assert set(trunk.state_dict()) == {k for k in ref if not k.startswith("fc.")}


def test_backbone_weights_from_local_file_only(tmp_path, no_downloads):
    donor = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in donor.state_dict().items()}}, path)
    trunk = build_backbone("resnet18", weights=str(path))
    donor_sd = donor.state_dict()
    assert all(torch.equal(v, donor_sd[k]) for k, v in trunk.state_dict().items())
    with pytest.raises(FileNotFoundError, match="not found"):
        build_backbone("resnet18", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="not a torchvision ResNet"):
        build_backbone("resnet50", weights=str(path))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16")


def test_projector_shapes_and_final_bn_without_affine():
    proj = DenseProjector(8, 16, 4)
    y = proj.train()(torch.randn(3, 8, 2, 2))
    assert y.shape == (3, 4, 2, 2)
    convs = [m for m in proj.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(c.bias is None and c.kernel_size == (1, 1) for c in convs)
    assert proj.net[-1].weight is None  # final BN has no affine parameters
    # training-mode BN without affine: every channel has zero mean and unit variance over the batch
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)


def test_dot_attention_is_multihead_attention_then_l2():
    attn = ContextualAttention(16, 4, "dot")
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(attn.in_proj.weight)
        mha.in_proj_bias.copy_(attn.in_proj.bias.normal_())
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias.normal_())
    x = torch.randn(2, 16, 3, 3)
    tokens = x.flatten(2).transpose(1, 2)
    want = F.normalize(mha(tokens, tokens, tokens, need_weights=False)[0], dim=-1)
    torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=1e-5)


def test_cosine_attention_from_the_formula():
    dim, heads, tau = 8, 2, 0.2
    attn = ContextualAttention(dim, heads, "cosine", tau)
    x = torch.randn(2, dim, 2, 3)
    tokens = x.flatten(2).transpose(1, 2)  # [B, L, D]
    w, b = attn.in_proj.weight, attn.in_proj.bias
    q, k, v = (tokens @ w[i * dim : (i + 1) * dim].T + b[i * dim : (i + 1) * dim] for i in range(3))
    dh = dim // heads
    outs = []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        qh, kh = F.normalize(q[..., sl], dim=-1), F.normalize(k[..., sl], dim=-1)
        outs.append(torch.softmax(qh @ kh.transpose(1, 2) / tau, dim=-1) @ v[..., sl])
    want = F.normalize(attn.out_proj(torch.cat(outs, dim=-1)), dim=-1)
    torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["dot", "cosine"])
def test_attention_has_no_positional_encoding(kind):
    attn = ContextualAttention(8, 2, kind)
    x = torch.randn(1, 8, 2, 2)
    perm = torch.tensor([3, 1, 0, 2])
    shuffled = x.flatten(2)[..., perm].view_as(x)
    torch.testing.assert_close(attn(shuffled), attn(x)[:, perm])


def test_attention_refuses_bad_options():
    with pytest.raises(ValueError, match="attention must be"):
        ContextualAttention(8, 2, "softmax")
    with pytest.raises(ValueError, match="must divide"):
        ContextualAttention(10, 3)


def test_cosine_momentum_schedule():
    assert cosine(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine(25, 100, 0.99, 1.0) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine(150, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine(5, 0, 0.99, 1.0) == 1.0
    values = [cosine(s, 10, 0.996, 1.0) for s in range(11)]
    assert values[0] == pytest.approx(0.996) and all(a <= b for a, b in zip(values, values[1:]))


def test_ema_update_by_name():
    student, teacher = nn.Linear(3, 2), nn.Linear(3, 2)
    old = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for p, o, s in zip(teacher.parameters(), old, student.parameters()):
        torch.testing.assert_close(p, 0.9 * o + 0.1 * s.detach())
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ema_update(teacher, student, 1.5)
    with pytest.raises(ValueError, match="no student counterpart"):
        ema_update(nn.Conv2d(1, 1, 1), nn.Linear(1, 1, bias=False), 0.5)


def test_registry_defaults_are_the_paper_values():
    d = method_defaults("clove")
    assert d["backbone"] == "resnet50" and d["proj_hidden"] == 4096 and d["proj_dim"] == 256
    assert d["heads"] == 8 and d["attention"] == "dot" and d["attention_temperature"] == 0.2
    assert (d["t_pos"], d["gamma"], d["margin"]) == (0.7, 2.0, 100.0)
    assert (d["neg_rank_first"], d["neg_rank_last"]) == (2, 10) and d["momentum_base"] == 0.99
    d["gamma"] = 5.0  # a copy: callers may edit it
    assert method_defaults("clove")["gamma"] == 2.0
    with pytest.raises(ValueError, match="unknown method"):
        method_defaults("simclr")


def test_registry_builds_and_refuses_unknown_keys():
    model = METHODS["clove"]({"backbone": "resnet18", "proj_hidden": 16, "proj_dim": 8, "heads": 2})
    assert isinstance(model, nn.Module) and isinstance(model, Method)
    assert model.teacher_momentum(0, 10) == pytest.approx(0.99)
    assert METHODS["clove"]({"backbone": "resnet18", "momentum_final": 0.999}).teacher_momentum(10, 10) == pytest.approx(0.999)
    with pytest.raises(ValueError, match="'gamma'"):
        METHODS["clove"]({"gama": 2.0})
    with pytest.raises(ValueError, match="'attention_temperature'"):
        METHODS["clove"]({"attention_temp": 0.1})
