"""Value rules of config fields (choices, ranges, what null means), declared beside each field.

A config dataclass declares a field as ``global_size: int = setting(224, min=1)``. Types are
checked where a dict becomes a dataclass (``train/config.py``); :func:`check_fields` checks the
rules that types cannot express and raises a one-line ``ValueError`` naming the key and the
allowed values. Keeping the rule on the field means a new field without one is visible (a test
walks the schema and refuses fields that have none).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

RULE = "rule"  # key of a field's metadata that holds its Rule


@dataclass(frozen=True)
class Rule:
    """What a field accepts beyond its type.

    Bounds apply to a number, or to every element of a list value. ``null`` is what null means
    for the fields that accept it (shown in errors); ``ordered`` asks a list to be non-decreasing
    (``[low, high]`` ranges). ``free`` marks a field that takes any value of its type.
    """

    choices: tuple[Any, ...] | None = None
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound
    below: float | None = None  # exclusive upper bound
    ordered: bool = False
    null: str | None = None
    free: bool = False

    def allowed(self) -> str:
        """``"one of ['a', 'b']"``, ``"in [0, 1]"``, ``">= 1"``, ... (without the null part)."""
        if self.choices is not None:
            return f"one of {list(self.choices)}"
        low = f"[{_num(self.min)}" if self.min is not None else f"({_num(self.above)}" if self.above is not None else None
        high = f"{_num(self.max)}]" if self.max is not None else f"{_num(self.below)})" if self.below is not None else None
        if low and high:
            text = f"in {low}, {high}"
        elif low:
            text = (">= " if low[0] == "[" else "> ") + low[1:]
        elif high:
            text = ("<= " if high[-1] == "]" else "< ") + high[:-1]
        else:
            text = "any value"
        return text + (", low <= high" if self.ordered else "")

    def violation(self, value: Any) -> bool:
        """True when a non-null ``value`` breaks the rule."""
        if self.free:
            return False
        if self.choices is not None:
            return value not in self.choices
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        for x in items:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue  # types are checked elsewhere; strings etc. only have choices
            if (self.min is not None and x < self.min) or (self.max is not None and x > self.max):
                return True
            if (self.above is not None and x <= self.above) or (self.below is not None and x >= self.below):
                return True
        return self.ordered and any(a > b for a, b in zip(items, items[1:]))


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **rule: Any) -> Any:
    """A dataclass field with a :class:`Rule` (keywords as Rule's fields)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={RULE: Rule(**rule)})


def rule_of(f: dataclasses.Field) -> Rule | None:
    """The :class:`Rule` declared with :func:`setting` on field ``f``, or None."""
    return f.metadata.get(RULE)


def check_value(key: str, value: Any, rule: Rule | None) -> None:
    """One-line ValueError when ``value`` breaks ``rule`` (null is checked by the type, not here)."""
    if value is None or rule is None or not rule.violation(value):
        return
    null = f" (or null: {rule.null})" if rule.null else ""
    raise ValueError(f"{key} must be {rule.allowed()}{null}, got {value!r}")


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check every declared rule of dataclass ``obj`` and of the dataclasses it holds.

    ``prefix`` is prepended to key names in errors (``"data."`` inside the training config).
    """
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, f"{prefix}{f.name}.")
        else:
            check_value(prefix + f.name, value, rule_of(f))
