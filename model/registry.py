"""Methods by name: ``METHODS[name](cfg) -> nn.Module`` and ``method_defaults(name) -> dict``.

``cfg`` is a plain dict of the method's options; missing keys take the defaults below (the values
of METHODS.md), unknown keys are refused with the closest valid key named.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from model.clove import CLoVE
from model.gtsa import GTSA, GTSA_DEFAULTS

CLOVE_DEFAULTS: dict[str, Any] = {
    "backbone": "resnet50",  # torchvision name: resnet18 (CPU runs), resnet50 (paper), ...
    "weights": None,  # local path to torchvision-named ResNet weights; never downloaded
    "proj_hidden": 4096,
    "proj_dim": 256,
    "heads": 8,
    "attention": "dot",  # dot (reference code) | cosine (paper's normalized attention)
    "attention_temperature": 0.2,  # used by attention=cosine only
    "t_pos": 0.7,  # M: centre distance < t_pos * max(cell diagonals) in original-image pixels
    "gamma": 2.0,
    "margin": 100.0,
    "neg_rank_first": 2,  # hard negatives: ranks first..last among keys not in M(i)
    "neg_rank_last": 10,
    "momentum_base": 0.99,  # EMA momentum, cosine from this to 1
    "num_global": None,  # None: the leading views of the largest size are the global ones
    "channels_last": False,
    "batched_pairs": True,  # False loops over the (student, teacher) pairs in Python (baseline)
}

_DEFAULTS = {"clove": CLOVE_DEFAULTS, "gtsa": GTSA_DEFAULTS}


def resolve_options(name: str, cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults of method ``name`` updated with ``cfg``; ValueError on an unknown key."""
    defaults = method_defaults(name)
    cfg = dict(cfg or {})
    for key in cfg:
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1, cutoff=0.0)
            raise ValueError(f"unknown {name} option {key!r}; did you mean {close[0]!r}?")
    return {**defaults, **cfg}


def build_clove(cfg: dict[str, Any] | None = None) -> nn.Module:
    """CLoVE from a plain dict of options (see :data:`CLOVE_DEFAULTS`)."""
    return CLoVE(**resolve_options("clove", cfg))


METHODS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "clove": build_clove,
    "gtsa": lambda cfg=None: GTSA(**(cfg or {})),  # GTSA resolves its options against GTSA_DEFAULTS
}


def method_defaults(name: str) -> dict[str, Any]:
    """A fresh copy of method ``name``'s default options."""
    if name not in _DEFAULTS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(_DEFAULTS)}")
    return dict(_DEFAULTS[name])
