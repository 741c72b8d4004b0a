"""DINO against its definition (docs/methods.md, "DINO"): the centering update, the teacher
temperature schedule, the loss as a loop over view pairs, who gets gradients, the weight-normalised
last layer, state dicts and the export. Tiny ViTs (2 blocks, 32 wide) on GTSA's synthetic batches."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from torch.nn import functional as F

from model import dino_loss as dl
from model.bench_gtsa import gtsa_synthetic_batch
from model.contract import check_method
from model.dino import DINO, DINO_DEFAULTS
from model.registry import METHODS, method_defaults

K = 48
TINY = {
    "arch": "vit_tiny_patch16_224",
    "img_size": 32,
    "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
    "head_hidden_dim": 32,
    "head_bottleneck_dim": 16,
    "out_dim": K,
    "drop_path_rate": 0.0,
}


def _model(**extra) -> DINO:
    torch.manual_seed(0)
    return METHODS["dino"]({**TINY, **extra}).train()


def _batch(b: int = 3, seed: int = 0):
    return gtsa_synthetic_batch(b, 32, 16, 4, seed=seed)  # 2 x 32 px + 4 x 16 px views, quarter turns


def _teacher_logits(model: DINO, batch) -> torch.Tensor:
    """Slow version: each global view alone through the teacher -> ``[G, B, K]``."""
    with torch.no_grad():
        return torch.stack([model.teacher(v)[1] for v in batch.views[:2]])


def test_forward_returns_the_contract_terms_and_the_registry_holds_the_defaults():
    model = _model()
    check_method(model)
    out = model(_batch())
    assert out["loss"].dtype == torch.float32 and out["loss"].ndim == 0 and out["loss"].requires_grad
    assert out["teacher_temp"].item() == pytest.approx(0.04)
    assert 0.0 <= out["teacher_entropy"].item() <= torch.log(torch.tensor(float(K))).item() + 1e-5
    assert out["embeddings"].shape == (3, 32) and not out["embeddings"].requires_grad
    assert method_defaults("dino") == DINO_DEFAULTS
    assert DINO_DEFAULTS["out_dim"] == 65536 and DINO_DEFAULTS["center_momentum"] == 0.9
    with pytest.raises(ValueError, match="did you mean 'student_temp'"):
        METHODS["dino"]({"student_tmp": 0.1})


def test_teacher_temperature_follows_the_linear_warm_up():
    start, end, w = 0.04, 0.07, 30
    for epoch in (0, 1, 7, 15, 28, 29):  # np.linspace(start, end, w)[epoch]
        assert dl.teacher_temperature(epoch, w, start, end) == pytest.approx(start + (end - start) * epoch / (w - 1))
    assert dl.teacher_temperature(29, w, start, end) == pytest.approx(end)
    assert dl.teacher_temperature(30, w, start, end) == end and dl.teacher_temperature(300, w, start, end) == end
    assert dl.teacher_temperature(0, 0, start, end) == end  # no warm-up
    assert dl.teacher_temperature(0, 1, start, end) == start and dl.teacher_temperature(1, 1, start, end) == end
    model = _model(warmup_teacher_temp_epochs=5, warmup_teacher_temp=0.02, teacher_temp=0.06)
    batch = _batch()
    for epoch, expected in [(0, 0.02), (1, 0.03), (2, 0.04), (4, 0.06), (5, 0.06), (9, 0.06)]:
        model.set_epoch(epoch)  # the loop's hook drives the schedule
        assert model.teacher_temp == pytest.approx(expected)
        assert model(batch)["teacher_temp"].item() == pytest.approx(expected)


def test_dino_loss_equals_a_loop_over_view_pairs():
    torch.manual_seed(1)
    g, v, b, tau = 2, 6, 5, 0.1
    student = torch.randn(v, b, K) * 3
    teacher = dl.teacher_probs(torch.randn(g, b, K), torch.randn(K), 0.05)
    terms = []
    for t in range(g):
        for s in range(v):
            if s == t:  # a global view is never its own target
                continue
            terms.append(torch.sum(-teacher[t] * F.log_softmax(student[s] / tau, dim=-1), dim=-1).mean())
    assert len(terms) == 2 * 5
    torch.testing.assert_close(dl.dino_loss(student, teacher, tau), torch.stack(terms).mean())


def test_the_models_loss_is_the_definition_with_its_center_and_temperature():
    model = _model(warmup_teacher_temp_epochs=4)
    model.set_epoch(2)
    center = torch.randn(1, K) * 0.3
    model.center.copy_(center)
    batch = _batch(seed=2)
    out = model(batch)
    # slow version, from the definition: every view alone through the student, teacher on the globals
    with torch.no_grad():
        student = [model.student(v)[1] for v in batch.views]
        temp = 0.04 + 0.03 * 2 / 3
        q = [F.softmax((k - center) / temp, dim=-1) for k in _teacher_logits(model, batch)]
    terms = [
        torch.sum(-q[t] * F.log_softmax(student[s] / 0.1, dim=-1), dim=-1).mean()
        for t in range(2)
        for s in range(len(batch.views))
        if s != t
    ]
    assert out["loss"].item() == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5, abs=1e-5)


def test_center_update_equals_its_definition_and_moves_in_training_only():
    model = _model(center_momentum=0.8)
    old = torch.randn(1, K)
    model.center.copy_(old)
    batch = _batch(b=4, seed=3)
    logits = _teacher_logits(model, batch).reshape(-1, K)  # both global views x 4 images
    model(batch)
    torch.testing.assert_close(model.center, 0.8 * old + 0.2 * logits.mean(dim=0, keepdim=True))
    before = model.center.clone()
    model.eval()(batch)
    assert torch.equal(model.center, before)


def test_batch_center_is_the_mean_over_every_rank(monkeypatch):
    torch.manual_seed(4)
    mine, other = torch.randn(6, K), torch.randn(6, K)  # this rank's teacher outputs and another rank's

    def all_reduce(tensor, *args, **kwargs):  # rank 1 holds `other`: the sum over both ranks
        tensor.add_(other.sum(dim=0))

    monkeypatch.setattr(dl.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dl.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(dl.dist, "get_world_size", lambda: 2)
    torch.testing.assert_close(dl.batch_center(mine), torch.cat([mine, other]).mean(dim=0))
    monkeypatch.undo()
    torch.testing.assert_close(dl.batch_center(mine), mine.mean(dim=0))
    torch.testing.assert_close(dl.updated_center(torch.ones(1, K), torch.zeros(K), 0.9), torch.full((1, K), 0.9))


def test_gradients_reach_the_student_only_and_the_teacher_moves_by_ema_only():
    model = _model(freeze_last_layer_epochs=1)
    model.set_epoch(1)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    groups = model.parameter_groups()
    grouped = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.student.parameters() if p.requires_grad}
    assert grouped == trainable and len(trainable) == len(list(model.student.parameters())) - 1  # all but g
    assert not grouped & {id(p) for p in model.teacher.parameters()}
    opt = torch.optim.AdamW([{"params": g["params"]} for g in groups], lr=1e-2)
    model(_batch())["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    for name, p in model.student.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    for k, v in model.teacher.state_dict().items():  # the optimizer step does not touch the teacher
        assert torch.equal(v, teacher_before[k]), k
    model.update_teacher(0.9)
    student = dict(model.student.named_parameters())
    for name, p in model.teacher.named_parameters():
        torch.testing.assert_close(p, 0.9 * teacher_before[name] + 0.1 * student[name].detach())
    assert model.teacher_momentum(0, 100) == pytest.approx(0.996)
    assert model.teacher_momentum(100, 100) == pytest.approx(1.0)


def test_last_layer_gets_zero_gradients_while_frozen():
    model = _model(freeze_last_layer_epochs=2)
    v = model.student.head.last_layer.parametrizations.weight.original1
    for epoch, frozen in [(0, True), (1, True), (2, False)]:
        model.set_epoch(epoch)
        model.zero_grad(set_to_none=True)
        model(_batch())["loss"].backward()
        assert v.grad is not None and (v.grad.abs().sum() == 0) == frozen, epoch  # zeros, not None: DDP-safe
        assert model.student.head.mlp[0].weight.grad.abs().sum() > 0


def test_last_layer_norm_stays_one_after_optimizer_and_ema_steps():
    model = _model(freeze_last_layer_epochs=0)
    head = model.student.head
    v = head.last_layer.parametrizations.weight.original1
    v_before = v.detach().clone()
    opt = torch.optim.AdamW([{"params": g["params"], "weight_decay": 0.4} for g in model.parameter_groups()], lr=0.05)
    for _ in range(2):
        opt.zero_grad()
        model(_batch())["loss"].backward()
        opt.step()
        model.update_teacher(0.5)
    assert not torch.allclose(v, v_before)  # the direction was trained
    for net in (model.student, model.teacher):
        last = net.head.last_layer
        assert torch.equal(last.parametrizations.weight.original0, torch.ones(K, 1))
        torch.testing.assert_close(last.weight.norm(dim=1), torch.ones(K))


def test_state_dict_round_trip_is_strict_and_keeps_the_center():
    model = _model()
    model(_batch())  # moves the center
    assert model.center.abs().sum() > 0
    state = model.state_dict()
    assert "center" in state and "student.head.last_layer.parametrizations.weight.original0" in state
    fresh = METHODS["dino"]({**TINY})
    fresh.load_state_dict(state, strict=True)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    model.eval(), fresh.eval()
    batch = _batch(seed=5)
    assert model(batch)["loss"].item() == fresh(batch)["loss"].item()


def test_head_reads_the_cls_token_or_the_mean_patch_token_without_one():
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    vit = model.student.encoder.vit
    token, _ = model.student(x)
    torch.testing.assert_close(token, vit.forward_features(x)[:, 0])
    no_cls = _model(model_kwargs={**TINY["model_kwargs"], "class_token": False, "global_pool": "avg"})
    vit = no_cls.student.encoder.vit
    assert vit.cls_token is None
    token, _ = no_cls.student(x)
    torch.testing.assert_close(token, vit.fc_norm(vit.forward_features(x).mean(dim=1)))


def test_export_loads_strictly_into_timm(tmp_path):
    model = _model()
    meta = json.loads(model.export(tmp_path)["backbone"].read_text())
    assert meta["family"] == "timm_vit" and meta["method"] == "dino" and meta["arch"] == TINY["arch"]
    vit = timm.create_model(meta["arch"], pretrained=False, **meta["model_kwargs"])
    vit.load_state_dict(torch.load(tmp_path / meta["weights"], weights_only=True), strict=True)
    x = torch.randn(2, 3, 16, 16)
    vit.eval(), model.eval()
    torch.testing.assert_close(vit.forward_features(x)[:, 0], model.student(x)[0])


def test_bf16_autocast_keeps_the_loss_and_the_center_in_fp32():
    model = _model()
    batch = _batch()
    ref = model(batch)["loss"].item()
    model.center.zero_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert model.center.dtype == torch.float32
    assert out["loss"].item() == pytest.approx(ref, rel=0.05)  # only the networks ran in bf16
