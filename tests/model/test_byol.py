"""The global-only baseline: loss against a per-pair loop written from the definition, the
contract, gradients to the student only, EMA-only teacher, export."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from model.contract import Method, no_decay
from model.registry import METHODS
from pipeline.views import named_recipe
from tests.model.helpers import make_batch

SMALL = {"backbone": "resnet18", "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32}


def build(seed: int = 0):
    torch.manual_seed(seed)
    return METHODS["byol"](dict(SMALL))


def test_loss_equals_the_definition_over_every_teacher_global_pair():
    model = build()
    batch = make_batch(named_recipe("clove", 64, 32, num_local=2), b=3)
    out = model(batch)
    # the definition: student view s is pooled, projected, predicted; teacher global view t pooled
    # and projected; 2 - 2 cos for every t in {0, 1} and every s != t, mean over pairs and images.
    # BatchNorm statistics are per view size, so the student runs once per size as the module does.
    with torch.no_grad():
        sizes = {}
        for i, v in enumerate(batch.views):
            sizes.setdefault(v.shape[-1], []).append(i)
        pred = {}
        for idx in sizes.values():
            p = model.predictor(model.student(torch.cat([batch.views[i] for i in idx])))
            for n, i in enumerate(idx):
                pred[i] = p[n * 3 : (n + 1) * 3]
        k = model.teacher(torch.cat(batch.views[:2])).view(2, 3, -1)
        losses = [2 - 2 * F.cosine_similarity(pred[s], k[t], dim=-1) for t in range(2) for s in range(4) if s != t]
    assert len(losses) == 6
    torch.testing.assert_close(out["loss"].detach(), torch.stack(losses).mean(), rtol=1e-5, atol=1e-6)
    assert out["embeddings"].shape == (3, 16)


def test_contract_gradients_and_teacher():
    model = build()
    assert isinstance(model, Method)
    batch = make_batch(named_recipe("clove", 64, 32, num_local=2), b=4)
    model(batch)["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.predictor.parameters())
    trainable = {id(p) for g in model.parameter_groups() for p in g["params"]}
    assert trainable == {id(p) for p in model.parameters() if p.requires_grad}
    listed = [id(p) for g in model.parameter_groups() for p in g["params"]]
    assert len(listed) == len(set(listed))  # each parameter in one group, once
    names = {id(p): n for n, p in model.named_parameters()}
    for group in model.parameter_groups():  # each group holds what its flag says, from both networks
        assert all(no_decay(names[id(p)], p) != group["decay"] for p in group["params"])
        assert {names[id(p)].split(".")[0] for p in group["params"]} == {"student", "predictor"}
    assert not trainable & {id(p) for p in model.teacher.parameters()}
    before = [p.detach().clone() for p in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    model.update_teacher(0.75)
    for b, t, s in zip(before, model.teacher.parameters(), model.student.parameters()):
        torch.testing.assert_close(t, 0.75 * b + 0.25 * s)


def test_export_writes_the_student_trunk(tmp_path):
    model = build()
    written = model.export(tmp_path)
    info = json.loads(written["backbone"].read_text())
    assert info["method"] == "byol" and info["arch"] == "resnet18"
    state = torch.load(written["torchvision"], weights_only=True)
    for k, v in model.student.backbone.state_dict().items():
        assert torch.equal(state[k], v), k
