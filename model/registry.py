"""Methods by name: one :class:`MethodRecord` per method in :data:`METHODS`, the only registration.

``METHODS[name](options)`` builds the method (an ``nn.Module`` satisfying ``model.contract.Method``);
``options`` is a plain dict whose missing keys take the method's defaults and whose unknown keys are
refused with the closest valid key named. The record also says which data recipes the method trains
on and its backbone family; every other part of the project reads those from here. Modules are
imported on first use, so a CLoVE run never imports timm. A new method is one module and one line
below (docs/extending.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


def _attribute(path: str) -> Any:
    """``"package.module:name"`` -> that module attribute (the module imported now)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MethodRecord:
    """What the project knows of a method.

    Attributes:
        target: ``"module:Class"``, the ``nn.Module`` built as ``Class(**options)`` (or the class
            itself, or any callable taking the options as keywords: what tests patch in).
        defaults: ``"module:DICT"``, its default options (the one place they live).
        recipes: the ``data.recipe`` values whose views it can train on; the first is its own.
        family: the backbone family of its export (``model.features.FAMILIES``).
    """

    target: str | Callable[..., nn.Module]
    defaults: str
    recipes: tuple[str, ...]
    family: str

    def __call__(self, options: dict[str, Any] | None = None) -> nn.Module:
        """The method built from ``options`` (missing keys: the defaults)."""
        build = _attribute(self.target) if isinstance(self.target, str) else self.target
        return build(**(options or {}))

    def default_options(self) -> dict[str, Any]:
        """A fresh copy of the default options."""
        return dict(_attribute(self.defaults))


METHODS: dict[str, MethodRecord] = {
    "clove": MethodRecord("model.clove:CLoVE", "model.clove:CLOVE_DEFAULTS", ("clove", "gtsa"), "torchvision_resnet"),
    "byol": MethodRecord("model.byol:BYOL", "model.byol:BYOL_DEFAULTS", ("clove", "gtsa", "two-view"), "torchvision_resnet"),
    # GTSA's rotation head needs the gtsa recipe's quarter turns (other recipes give all-zero targets)
    "gtsa": MethodRecord("model.gtsa:GTSA", "model.gtsa:GTSA_DEFAULTS", ("gtsa",), "timm_vit"),
    "dino": MethodRecord("model.dino:DINO", "model.dino:DINO_DEFAULTS", ("gtsa", "clove", "two-view"), "timm_vit"),
}


def method_record(name: str) -> MethodRecord:
    """``METHODS[name]``; ValueError naming the registered methods for an unknown one."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def method_defaults(name: str) -> dict[str, Any]:
    """A fresh copy of method ``name``'s default options."""
    return method_record(name).default_options()


def check_method_recipe(name: str, recipe: str) -> None:
    """ValueError in one line when method ``name`` cannot train on views of ``recipe``."""
    record = method_record(name)
    if recipe not in record.recipes:
        raise ValueError(
            f"method {name!r} cannot train on recipe {recipe!r} views (it takes {', '.join(record.recipes)}); "
            f"set data.recipe={record.recipes[0]}"
        )
