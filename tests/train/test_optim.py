"""Optimizers and clipping against slow references written here from their definitions."""

from __future__ import annotations

import torch
from torch import nn

from model.contract import split_decay
from train.config import OptimConfig
from train.optim import LARS, build_optimizer, clip_per_parameter_, param_groups, set_lr_wd


class _Net(nn.Sequential):
    """A tiny "method": its parameter groups are the contract's split (model.contract.split_decay)."""

    def parameter_groups(self) -> list[dict]:
        return split_decay(self)


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = _Net(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    frozen = nn.Linear(5, 5)  # e.g. a teacher: no grad, must not be optimised
    frozen.requires_grad_(False)
    net.add_module("frozen", frozen)
    net.register_parameter("pos_embed", nn.Parameter(torch.zeros(1, 4, 8)))  # a ViT's: never decayed
    return net


def test_param_groups_keep_1d_params_out_of_decay_and_lars():
    net = _net()
    groups = {g["group"]: g for g in param_groups(net, 0.1)}
    decay = {id(p) for p in groups["decay"]["params"]}
    plain = {id(p) for p in groups["no_decay"]["params"]}
    assert decay == {id(net[0].weight), id(net[3].weight)}
    assert plain == {id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].bias), id(net.pos_embed)}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["decay"]["lars"] is True
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["no_decay"]["lars"] is False


def _reference_lars(params, grads, bufs, lr, momentum, wd, trust, adapt):
    """One LARS step, tensor by tensor, float64 (the definition in the LARS docstring)."""
    out = []
    for p, g, b in zip(params, grads, bufs):
        p, g, b = p.double(), g.double(), b.double()
        d = g + wd * p
        if adapt:
            pn, dn = p.norm().item(), d.norm().item()
            d = d * (trust * pn / dn if pn > 0 and dn > 0 else 1.0)
        b = momentum * b + d
        out.append((p - lr * b, b))
    return out


def test_lars_matches_the_reference_over_several_steps():
    net = _net()
    opt = build_optimizer(OptimConfig(name="lars", weight_decay=1e-3, momentum=0.9, trust_coefficient=1e-3), net, lr=0.5)
    assert isinstance(opt, LARS)
    state = {id(p): (p.detach().clone(), torch.zeros_like(p)) for g in opt.param_groups for p in g["params"]}
    gen = torch.Generator().manual_seed(1)
    for step in range(3):
        lr = 0.5 / (step + 1)
        set_lr_wd(opt, lr, 1e-3)
        expected = {}
        for g in opt.param_groups:
            grads = [torch.randn(p.shape, generator=gen) for p in g["params"]]
            for p, gr in zip(g["params"], grads):
                p.grad = gr.clone()
            ref = _reference_lars(
                [state[id(p)][0] for p in g["params"]],
                grads,
                [state[id(p)][1] for p in g["params"]],
                lr,
                0.9,
                g["weight_decay"],
                1e-3,
                g["lars"],
            )
            expected.update({id(p): r for p, r in zip(g["params"], ref)})
        opt.step()
        for g in opt.param_groups:
            for p in g["params"]:
                new_p, new_b = expected[id(p)]
                torch.testing.assert_close(p.detach().double(), new_p, rtol=1e-5, atol=1e-7)
                state[id(p)] = (new_p.float(), new_b.float())
    assert net.frozen.weight.grad is None


def test_lars_leaves_zero_params_unadapted():
    p = nn.Parameter(torch.zeros(3, 3))
    opt = LARS([{"params": [p], "lars": True, "weight_decay": 0.0}], lr=1.0, momentum=0.0)
    p.grad = torch.ones(3, 3)
    opt.step()
    assert torch.equal(p.detach(), -torch.ones(3, 3))  # trust ratio 1 when ||p|| = 0


def test_adamw_decays_only_the_weight_group():
    net = _net()
    opt = build_optimizer(OptimConfig(name="adamw", weight_decay=0.5), net, lr=0.1)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    set_lr_wd(opt, 0.1, 0.5)
    for p in net.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)  # zero gradient: only decoupled weight decay moves anything
    opt.step()
    for name, p in net.named_parameters():
        if p.requires_grad and p.ndim > 1 and name != "pos_embed":
            torch.testing.assert_close(p.detach(), before[name] * (1 - 0.1 * 0.5))
        else:
            assert torch.equal(p.detach(), before[name]), name


def test_set_lr_wd_respects_groups():
    opt = build_optimizer(OptimConfig(name="adamw"), _net(), lr=1.0)
    set_lr_wd(opt, 0.25, 0.04)
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(0.25, 0.04), (0.25, 0.0)]


def test_per_parameter_clipping():
    grads = [torch.full((4,), 3.0), torch.full((2, 2), 0.5), torch.zeros(3)]  # norms 6, 1, 0
    clip_per_parameter_(grads, 3.0)
    torch.testing.assert_close(grads[0].norm(), torch.tensor(3.0), rtol=1e-5, atol=0)
    assert torch.equal(grads[1], torch.full((2, 2), 0.5)) and torch.equal(grads[2], torch.zeros(3))
