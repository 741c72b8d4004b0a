"""Methods by name: ``METHODS[name](options) -> nn.Module`` satisfying ``model.contract.Method``.

``options`` is a plain dict; missing keys take the method's defaults (one dict per method, in the
method's module), unknown keys are refused with the closest valid key named. A new method is one
module and one line in each dict below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from model.byol import BYOL, BYOL_DEFAULTS
from model.clove import CLOVE_DEFAULTS, CLoVE
from model.dino import DINO, DINO_DEFAULTS
from model.gtsa import GTSA, GTSA_DEFAULTS

METHODS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "clove": lambda options: CLoVE(**(options or {})),
    "byol": lambda options: BYOL(**(options or {})),  # the global-only baseline
    "gtsa": lambda options: GTSA(**(options or {})),
    "dino": lambda options: DINO(**(options or {})),  # the global-only ViT baseline
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "clove": CLOVE_DEFAULTS,
    "byol": BYOL_DEFAULTS,
    "gtsa": GTSA_DEFAULTS,
    "dino": DINO_DEFAULTS,
}


def method_defaults(name: str) -> dict[str, Any]:
    """A fresh copy of method ``name``'s default options."""
    if name not in DEFAULTS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(DEFAULTS)}")
    return dict(DEFAULTS[name])
