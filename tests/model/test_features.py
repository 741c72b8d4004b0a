"""Frozen dense features: random inits named and distinct, exports loaded strictly and computing
the same maps as torchvision's own network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from model.features import FAMILIES, load_exported, random_features
from tests.model.helpers import perturb


def _stages(net: torchvision.models.ResNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """layer3 and layer4 of a torchvision ResNet, written out here."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    l3 = net.layer3(net.layer2(net.layer1(x)))
    return {"layer3": l3, "layer4": net.layer4(l3)}


def test_random_inits_are_named_seeded_and_differ():
    default = random_features("resnet18", "default", seed=1)
    zero = random_features("resnet18", "zero_residual", seed=1)
    assert default.name == "random resnet18 (torchvision init)"
    assert zero.name == "random resnet18 (zero-residual init)"
    assert zero.info["init"] == "zero_residual" and default.info["seed"] == 1
    r = zero.body.resnet
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for layer in (r.layer1, r.layer4) for b in layer)
    assert torch.count_nonzero(default.body.resnet.layer1[0].bn2.weight) > 0
    again = random_features("resnet18", "default", seed=1)
    other = random_features("resnet18", "default", seed=2)

    def w(f):
        return f.body.resnet.conv1.weight

    assert torch.equal(w(default), w(again)) and not torch.equal(w(default), w(other))
    with pytest.raises(ValueError, match="choose one of"):
        random_features("resnet18", "xavier")
    with pytest.raises(ValueError, match="no backbone family"):
        random_features("not_a_net")


def test_features_are_frozen_with_strides_and_shapes():
    f = random_features("resnet18")
    f.train()  # must stay in eval mode: BN statistics never move
    assert not f.training and not any(p.requires_grad for p in f.parameters())
    x = torch.randn(2, 3, 96, 128)
    before = f.body.resnet.bn1.running_mean.clone()
    out = f(x)
    assert torch.equal(before, f.body.resnet.bn1.running_mean)
    assert f.strides == {"layer3": 16, "layer4": 32}
    for layer, s in f.strides.items():
        assert out[layer].shape[2:] == (96 // s, 128 // s) and not out[layer].requires_grad
    assert set(f.select(["layer2", "layer4"])(x)) == {"layer2", "layer4"}
    with pytest.raises(ValueError, match="choose from"):
        f.select(["layer9"])


def test_load_exported_matches_torchvision(tmp_path):
    net = torchvision.models.resnet18()
    perturb(net)  # weights and BN statistics that a wrong mapping could not hide
    torch.save(net.state_dict(), tmp_path / "resnet18_torchvision.pth")
    meta = {"family": "torchvision_resnet", "arch": "resnet18", "weights": "resnet18_torchvision.pth", "method": "clove"}
    (tmp_path / "backbone.json").write_text(json.dumps(meta))
    f = load_exported(tmp_path)
    assert f.name.startswith("clove resnet18") and f.info["method"] == "clove"
    net.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _stages(net, x)
    out = f(x)
    for layer in ("layer3", "layer4"):
        torch.testing.assert_close(out[layer], expected[layer])


def test_bad_exports_are_refused_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="backbone.json"):
        load_exported(tmp_path)
    (tmp_path / "backbone.json").write_text(json.dumps({"family": "mystery", "arch": "x"}))
    with pytest.raises(ValueError, match="unknown backbone family"):
        load_exported(tmp_path)
    (tmp_path / "backbone.json").write_text(
        json.dumps({"family": "torchvision_resnet", "arch": "resnet18", "weights": "missing.pth"})
    )
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_exported(tmp_path)
    assert "torchvision_resnet" in FAMILIES


def test_gtsa_export_loads_as_timm_vit_features(tmp_path):
    """The timm_vit family: GTSA's export reads back (strict) and gives the student ViT's own
    last-block patch tokens as a map."""
    import yaml

    from model.registry import METHODS
    from model.vit import ViTFeatureMaps

    options = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/gtsa_tiny.yaml").read_text())["method"]["options"]
    torch.manual_seed(0)
    method = METHODS["gtsa"](options)
    method.export(tmp_path)
    features = load_exported(tmp_path)
    assert features.info["family"] == "timm_vit" and set(features.strides.values()) == {8}
    x = torch.randn(2, 3, 64, 64)
    reference = ViTFeatureMaps(method.student.encoder.vit).eval()
    with torch.no_grad():
        got, want = features(x), reference(x)
    assert list(got) == list(want)
    for name in got:
        torch.testing.assert_close(got[name], want[name])
    assert got[name].shape == (2, 192, 8, 8)


def _batch_norm_inputs(features, batches):
    """Per BatchNorm of ``features.body``: its input in every batch, computed as training computes
    it (every norm on batch statistics), on a copy so ``features`` is untouched."""
    import copy

    body = copy.deepcopy(features.body)
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, m in body.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.train()
            hooks.append(m.register_forward_pre_hook(lambda mod, args, name=name: seen.setdefault(name, []).append(args[0])))
    with torch.no_grad():
        for x in batches:
            body(x)
    for h in hooks:
        h.remove()
    return seen


def test_reestimated_batch_norm_is_the_population_statistic_over_unequal_batches():
    f = random_features("resnet18", seed=0)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, 64, 64, generator=gen) for n in (5, 5, 2)]  # a short last batch
    inputs = _batch_norm_inputs(f, batches)
    before = {n: p.clone() for n, p in f.state_dict().items() if "running" not in n and "num_batches" not in n}

    assert f.reestimate_batch_norm(iter(batches)) is True
    norms = dict(f.body.named_modules())
    assert len(inputs) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in norms.values()) == 20
    for name, xs in inputs.items():
        # the definition: per channel, mean and (population) variance over every value the norm
        # saw, all batches pooled, so each batch weighs by its size
        pooled = torch.cat([x.transpose(0, 1).reshape(x.shape[1], -1) for x in xs], 1).double()
        torch.testing.assert_close(norms[name].running_mean, pooled.mean(1).float(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norms[name].running_var, pooled.var(1, unbiased=False).float(), rtol=1e-4, atol=1e-5)
        equal_weight = torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0)
        assert not torch.allclose(norms[name].running_mean, equal_weight, rtol=1e-4, atol=1e-5)  # the old rule
    # nothing else moved, and the backbone is frozen and in eval mode again
    after = {n: p for n, p in f.state_dict().items() if n in before}
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert not any(m.training for m in f.modules()) and not any(p.requires_grad for p in f.parameters())
    out = f(batches[0])
    assert set(out) == {"layer3", "layer4"}


def test_reestimation_replaces_the_statistics_of_a_trained_export(tmp_path):
    # an export whose BatchNorm statistics are far from anything the images give: after
    # re-estimation nothing of them may remain, i.e. the result equals a copy re-estimated from
    # the library's initial statistics
    from tests.model.helpers import perturb

    resnet = torchvision.models.resnet18()
    perturb(resnet, seed=3)
    for m in resnet.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.add_(50.0)
            m.running_var.mul_(400.0)
    trained = _export(tmp_path, resnet)
    fresh = load_exported(trained)
    for m in fresh.body.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 64, 64, generator=gen), torch.randn(3, 3, 64, 64, generator=gen)]
    exported = load_exported(trained)
    exported.reestimate_batch_norm(iter(batches))
    fresh.reestimate_batch_norm(iter(batches))
    for (name, a), b in zip(exported.state_dict().items(), fresh.state_dict().values()):
        if "running" in name:
            torch.testing.assert_close(a, b, msg=name)


def test_reestimating_without_batch_norm_changes_nothing():
    pytest.importorskip("timm")
    f = random_features("vit_tiny_patch16_224", seed=0)
    state = {n: p.clone() for n, p in f.state_dict().items()}
    assert f.reestimate_batch_norm(iter([torch.randn(2, 3, 32, 32)])) is False
    assert all(torch.equal(state[n], p) for n, p in f.state_dict().items())


def _export(directory, resnet: torch.nn.Module):
    """Write ``resnet`` as a torchvision export with its backbone.json; returns the directory."""
    import json

    torch.save(resnet.state_dict(), directory / "resnet18_torchvision.pth")
    meta = {"family": "torchvision_resnet", "arch": "resnet18", "weights": "resnet18_torchvision.pth", "method": "clove"}
    (directory / "backbone.json").write_text(json.dumps(meta))
    return directory
