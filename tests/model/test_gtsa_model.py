"""The GTSA module against the method contract: shapes, rotation targets, who gets gradients, EMA,
warm-up, batched vs looped pairs, export into timm. Tiny ViTs (2 blocks, 32 wide) on small views."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from torch.nn import functional as F

from model.bench_gtsa import gtsa_synthetic_batch
from model.contract import check_method
from model.gtsa import GTSA, GTSA_DEFAULTS
from model.registry import METHODS, method_defaults
from tests.model.helpers import QUICK_BENCH

TINY = {
    "arch": "vit_tiny_patch16_224",
    "img_size": 32,
    "model_kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
    "proj_dim": 24,
    "pred_hidden": 24,
    "rot_hidden": 16,
    "rot_bottleneck": 8,
    "aligned_cells_global": 4,
    "aligned_cells_local": 2,
}


def _model(**extra) -> GTSA:
    torch.manual_seed(0)
    return METHODS["gtsa"]({**TINY, **extra})


def _batch(b: int = 3, seed: int = 0):
    return gtsa_synthetic_batch(b, 32, 16, 4, seed=seed)  # 2 x 32 px (4x4 tokens) + 4 x 16 px (2x2)


def test_forward_returns_the_contract_terms():
    model = _model(pc_warmup_epochs=0)
    check_method(model)
    out = model(_batch())
    assert out["loss"].dtype == torch.float32 and out["loss"].ndim == 0 and out["loss"].requires_grad
    for key in ("aligned", "pc", "rot", "rot_acc"):
        assert out[key].ndim == 0 and not out[key].requires_grad
    assert out["embeddings"].shape == (3 * 16, 24) and not out["embeddings"].requires_grad
    expected = out["aligned"] + 0.5 * out["pc"] + 0.5 * out["rot"]
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert -1.0 <= out["aligned"].item() <= 1.0 and -1.0 <= out["pc"].item() <= 1.0


def test_registry_defaults_are_the_modules_and_unknown_options_are_refused():
    assert method_defaults("gtsa") == GTSA_DEFAULTS
    with pytest.raises(ValueError, match="did you mean 'pc_weight'"):
        METHODS["gtsa"]({"pc_wieght": 1.0})


def test_rotation_targets_are_the_batch_rotation():
    model = _model(drop_path_rate=0.0)
    batch = _batch()
    assert batch.rotation.unique().numel() > 1  # the sampler drew several quarter turns
    out = model(batch)
    # slow version: each view alone through encoder -> mean token -> rotation head, CE vs batch.rotation
    st = model.student
    ce = [
        F.cross_entropy(st.rot_head(st.encoder(v).mean(dim=(2, 3))), batch.rotation[:, i], reduction="none")
        for i, v in enumerate(batch.views)
    ]
    assert out["rot"].item() == pytest.approx(torch.cat(ce).mean().item(), abs=1e-5)
    batch.rotation = (batch.rotation + 1) % 4  # other targets, other loss
    assert model(batch)["rot"].item() != pytest.approx(out["rot"].item(), abs=1e-4)


def test_gradients_reach_the_student_only_and_the_teacher_moves_by_ema_only():
    model = _model(pc_warmup_epochs=0)
    teacher_before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    groups = model.parameter_groups()
    grouped = {id(p) for g in groups for p in g["params"]}
    assert grouped == {id(p) for p in model.student.parameters()}
    assert not grouped & {id(p) for p in model.teacher.parameters()}
    opt = torch.optim.AdamW([{"params": g["params"]} for g in groups], lr=1e-2)
    model(_batch())["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    for name, p in model.student.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    for k, v in model.teacher.state_dict().items():  # the optimizer step does not touch the teacher
        assert torch.equal(v, teacher_before[k]), k
    m = 0.9
    model.update_teacher(m)
    student = dict(model.student.named_parameters())
    for name, p in model.teacher.named_parameters():
        torch.testing.assert_close(p, m * teacher_before[name] + (1 - m) * student[name].detach())
    assert model.teacher_momentum(0, 100) == pytest.approx(0.996)
    assert model.teacher_momentum(100, 100) == pytest.approx(1.0)


def test_no_decay_group_holds_pos_embed_cls_token_norms_and_biases():
    model = _model()
    params = dict(model.student.named_parameters())
    names = {id(p): n for n, p in params.items()}
    plain = {names[id(p)] for g in model.parameter_groups() if not g["decay"] for p in g["params"]}
    assert {"encoder.vit.pos_embed", "encoder.vit.cls_token", "encoder.vit.norm.weight", "projector.proj.bias"} <= plain
    assert all(params[n].ndim == 1 or n.endswith(("pos_embed", "cls_token")) for n in plain)
    assert all(params[n].ndim > 1 for n in set(params) - plain)  # weights of linears and convs decay


def test_drop_path_in_the_student_only():
    model = _model(drop_path_rate=0.5).train()
    x = torch.randn(4, 3, 32, 32)
    torch.manual_seed(1)
    a = model.student.encoder(x)
    b = model.student.encoder(x)
    assert not torch.equal(a, b)  # stochastic depth draws from the global RNG
    assert torch.equal(model.teacher.encoder(x), model.teacher.encoder(x))


def test_pc_loss_is_logged_but_gives_no_gradient_during_warm_up():
    model = _model(pc_warmup_epochs=2, aligned_weight=0.0, rot_weight=0.0)
    model.set_epoch(1)
    out = model(_batch())
    assert out["pc"].item() != 0.0 and out["loss"].item() == 0.0
    model.set_epoch(2)
    out = model(_batch())
    assert out["loss"].item() == pytest.approx(0.5 * out["pc"].item(), abs=1e-6)


def test_batched_pairs_equal_the_python_loop():
    batch = _batch(b=2, seed=3)
    batched = _model(drop_path_rate=0.0, pc_warmup_epochs=0)
    looped = _model(drop_path_rate=0.0, pc_warmup_epochs=0, batched_pairs=False)
    a, b = batched(batch), looped(batch)
    for key in ("loss", "aligned", "pc", "rot"):
        assert a[key].item() == pytest.approx(b[key].item(), abs=1e-5), key
    a["loss"].backward(), b["loss"].backward()
    for (name, p), q in zip(batched.student.named_parameters(), looped.student.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_export_loads_strictly_into_timm(tmp_path):
    model = _model()
    paths = model.export(tmp_path)
    meta = json.loads(paths["backbone"].read_text())
    assert meta["family"] == "timm_vit" and meta["method"] == "gtsa" and meta["arch"] == TINY["arch"]
    vit = timm.create_model(meta["arch"], pretrained=False, **meta["model_kwargs"])
    vit.load_state_dict(torch.load(tmp_path / meta["weights"], weights_only=True), strict=True)
    x = torch.randn(2, 3, 16, 16)  # a local-size view: position embeddings interpolated
    vit.eval(), model.eval()
    tokens = vit.forward_features(x)[:, vit.num_prefix_tokens :]
    torch.testing.assert_close(tokens.transpose(1, 2).reshape(2, -1, 2, 2), model.student.encoder(x))


def test_the_objective_covers_the_18_pairs():
    model = _model()
    batch = gtsa_synthetic_batch(2, 32, 16, 8)  # 2 global + 8 local views
    rows = {}
    real_rows = model._rows

    def spy(z, k, ms, mt, grp, teacher_size):
        rows.setdefault(grp.is_global, 0)
        rows[grp.is_global] += z.shape[0]
        return real_rows(z, k, ms, mt, grp, teacher_size)

    model._rows = spy
    model(batch)
    assert rows == {True: 2 * 2, False: 16 * 2}  # (t, v != t): 2 global + 16 local pairs, x 2 images


def test_bench_command_times_batched_and_looped_pairs(capsys, tmp_path):
    from model.bench import main

    preset = tmp_path / "p.yaml"
    preset.write_text(json.dumps({"method": {"name": "gtsa", "options": TINY}, "data": {"batch_size": 2}}))
    threads = torch.get_num_threads()
    try:
        sizes = ["--global-size", "32", "--local-size", "16", "--num-local", "2"]
        main(["--method", "gtsa", "--config", str(preset), *sizes, *QUICK_BENCH, "--device", "cpu", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide
    lines = capsys.readouterr().out.splitlines()
    assert "batch 2, views 2x32 + 2x16" in lines[0]
    rows = {line.split()[0]: float(line.split()[1]) for line in lines[2:4]}
    assert set(rows) == {"batched", "looped"} and min(rows.values()) > 0


def test_exported_vit_loads_as_dense_feature_maps(tmp_path):
    from model.vit import load_timm_vit_features

    model = _model(model_kwargs={**TINY["model_kwargs"], "depth": 3}).eval()
    paths = model.export(tmp_path)
    features = load_timm_vit_features(tmp_path, json.loads(paths["backbone"].read_text()), blocks=2)
    x = torch.randn(2, 3, 32, 48)  # non-square: position embeddings interpolated on both axes
    maps = features(x)
    assert list(maps) == ["block2", "block3"] and features.strides == {"block2": 8, "block3": 8}
    assert all(m.shape == (2, 32, 4, 6) for m in maps.values())
    torch.testing.assert_close(maps["block3"], model.student.encoder(x))  # the last block is what GTSA trained


def test_any_timm_vit_works_including_register_tokens(tmp_path):
    # 1 class + 4 register tokens in front of the patch tokens; patch 14
    model = GTSA(
        **{
            **TINY,
            "arch": "vit_small_patch14_reg4_dinov2",
            "img_size": 28,
            "model_kwargs": {"depth": 1, "embed_dim": 32, "num_heads": 2},
        }
    )
    assert model.student.encoder.vit.num_prefix_tokens == 5
    assert model.student.encoder(torch.randn(1, 3, 28, 42)).shape == (1, 32, 2, 3)
    meta = json.loads(model.export(tmp_path)["backbone"].read_text())
    vit = timm.create_model(meta["arch"], pretrained=False, **meta["model_kwargs"])
    vit.load_state_dict(torch.load(tmp_path / meta["weights"], weights_only=True), strict=True)
    with pytest.raises(ValueError, match="timm.list_models"):
        GTSA(arch="resnet18")


def test_bf16_autocast_keeps_geometry_and_loss_terms_in_fp32():
    model = _model(drop_path_rate=0.0, pc_warmup_epochs=0)
    batch = _batch()
    ref = model(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    for key in ("aligned", "pc", "rot"):  # only the networks ran in bf16
        assert out[key].item() == pytest.approx(ref[key].item(), abs=0.05), key


def test_every_gradient_has_its_parameters_layout():
    # DDP's gradient layout contract: a gradient with other strides than its parameter (a 1x1
    # conv fed a channels-last map gets a channels-last weight gradient) costs a copy per step and
    # the "Grad strides do not match bucket view strides" warning in multi-process runs
    torch.manual_seed(0)
    model = _model()
    model(_batch())["loss"].backward()
    mismatched = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.stride() != p.stride()]
    assert not mismatched
