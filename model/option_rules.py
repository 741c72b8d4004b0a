"""The value rules of ``method.options``: type, range and what null means, per option name.

An option name means the same thing in every method that has it (``proj_dim`` is the projector's
output width in CLoVE, GTSA and BYOL alike), so one table serves all of them; a test checks that
every key of every method's defaults has a rule here. :func:`check_options` applies the rules
with the config's own conventions: booleans are strictly ``true``/``false`` (``maybe`` is not
true), integers are not floats, numbers are finite, and sizes have sane upper bounds so that a
typo such as ``proj_dim=1000000`` stops at load time instead of in an out-of-memory error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_WIDTH = 65536  # channels of any projector / predictor / head layer
MAX_CELLS = 64  # aligned-cell grids


@dataclass(frozen=True)
class OptionRule:
    """``kind``: ``int``, ``float``, ``bool``, ``str``, ``dict``; ``low``/``high`` inclusive bounds
    (``low_open``/``high_open`` make them exclusive); ``null``: what null means (None: not allowed);
    ``choices``: the allowed strings."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    null: str | None = None
    choices: tuple[str, ...] | None = None

    def allowed(self) -> str:
        """The rule in words, for errors."""
        if self.choices:
            text = f"one of {list(self.choices)}"
        else:
            words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "dict": "a mapping"}
            text = words[self.kind]
            if self.low is not None or self.high is not None:
                lo = "(" if self.low_open else "["
                hi = ")" if self.high_open else "]"
                text += f" in {lo}{_num(self.low)}, {_num(self.high)}{hi}"
        return text + (f" (or null: {self.null})" if self.null else "")


def _num(x: float | None) -> str:
    if x is None:
        return "inf"
    return str(int(x)) if float(x).is_integer() else str(x)


def _width(null: str | None = None) -> OptionRule:
    return OptionRule("int", 1, MAX_WIDTH, null=null)


def _unit(low_open: bool = False, high_open: bool = False) -> OptionRule:
    return OptionRule("float", 0, 1, low_open=low_open, high_open=high_open)


OPTION_RULES: dict[str, OptionRule] = {
    # backbones
    "backbone": OptionRule("str"),
    "arch": OptionRule("str"),
    "weights": OptionRule("str", null="random initialisation"),
    "zero_init_residual": OptionRule("bool"),
    "model_kwargs": OptionRule("dict"),
    "img_size": OptionRule("int", 16, 4096),
    "drop_path_rate": _unit(high_open=True),
    "channels_last": OptionRule("bool"),
    # heads
    "proj_hidden": _width(null="the encoder's width"),
    "proj_dim": _width(),
    "proj_blocks": OptionRule("int", 1, 16),
    "pred_hidden": _width(),
    "rot_hidden": _width(),
    "rot_bottleneck": _width(),
    "heads": OptionRule("int", 1, 1024),
    "head_layers": OptionRule("int", 1, 16),
    "head_hidden_dim": _width(),
    "head_bottleneck_dim": _width(),
    "out_dim": _width(),
    "attention": OptionRule("str", choices=("dot", "cosine")),
    "attention_temperature": OptionRule("float", 0, 100, low_open=True),
    # objectives
    "t_pos": OptionRule("float", 0, 100, low_open=True),
    "gamma": OptionRule("float", 0, 1000),
    "margin": OptionRule("float", 0, 1e6),
    "neg_rank_first": OptionRule("int", 1, 100_000),
    "neg_rank_last": OptionRule("int", 1, 100_000),
    "aligned_cells_global": OptionRule("int", 1, MAX_CELLS),
    "aligned_cells_local": OptionRule("int", 1, MAX_CELLS),
    "pc_keep_ratio": _unit(low_open=True),
    "pc_warmup_epochs": OptionRule("int", 0, 100_000),
    "aligned_weight": OptionRule("float", 0, 1000),
    "pc_weight": OptionRule("float", 0, 1000),
    "rot_weight": OptionRule("float", 0, 1000),
    "student_temp": OptionRule("float", 0, 100, low_open=True),
    "warmup_teacher_temp": OptionRule("float", 0, 100, low_open=True),
    "teacher_temp": OptionRule("float", 0, 100, low_open=True),
    "warmup_teacher_temp_epochs": OptionRule("int", 0, 100_000),
    "center_momentum": _unit(),
    "freeze_last_layer_epochs": OptionRule("int", 0, 100_000),
    # teacher and views
    "momentum_base": _unit(),
    "momentum_final": _unit(),
    "num_global": OptionRule("int", 1, 64, null="the leading views of the largest size"),
    "batched_pairs": OptionRule("bool"),
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str) and bool(value.strip())
    return isinstance(value, dict)


def check_option(method: str, key: str, value: Any, prefix: str = "method.options.") -> None:
    """One-line ValueError when ``value`` breaks the rule of option ``key`` (unknown names pass:
    :func:`model.options.resolve_options` refuses them with the closest valid one)."""
    rule = OPTION_RULES.get(key)
    if rule is None:
        return
    if value is None:
        if rule.null is None:
            raise ValueError(f"{prefix}{key} ({method}) cannot be null: expected {rule.allowed()}")
        return
    bad = not _type_ok(value, rule.kind)
    if not bad and rule.choices is not None:
        bad = value not in rule.choices
    if not bad and rule.kind in ("int", "float"):
        if rule.low is not None and (value < rule.low or (rule.low_open and value == rule.low)):
            bad = True
        if rule.high is not None and (value > rule.high or (rule.high_open and value == rule.high)):
            bad = True
    if bad:
        raise ValueError(f"{prefix}{key} ({method}) must be {rule.allowed()}, got {value!r}")


def check_options(method: str, options: dict[str, Any], prefix: str = "method.options.") -> None:
    """Check every option of ``options`` (already merged with the defaults) and the rules between
    them; one-line ValueError naming the first bad key."""
    for key, value in options.items():
        check_option(method, key, value, prefix)
    dim, heads = options.get("proj_dim"), options.get("heads")
    if isinstance(dim, int) and isinstance(heads, int) and dim % heads:
        raise ValueError(f"{prefix}heads ({heads}) must divide {prefix}proj_dim ({dim}) ({method})")
    first, last = options.get("neg_rank_first"), options.get("neg_rank_last")
    if isinstance(first, int) and isinstance(last, int) and first > last:
        raise ValueError(f"{prefix}neg_rank_first ({first}) must be <= {prefix}neg_rank_last ({last}) ({method})")
