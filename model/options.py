"""Method options: one defaults dict per method, resolved against what the config gives."""

from __future__ import annotations

import difflib
from typing import Any

from model.option_rules import check_options


def resolve_options(method: str, defaults: dict[str, Any], given: dict[str, Any] | None) -> dict[str, Any]:
    """``defaults`` updated with ``given``; ValueError naming the closest valid key on an unknown one,
    or the first value outside its rule (:mod:`model.option_rules`)."""
    given = dict(given or {})
    for key in given:
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1, cutoff=0.0)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {method} option {key!r}{hint} (valid: {', '.join(sorted(defaults))})")
    merged = {**defaults, **given}
    check_options(method, merged, prefix=f"{method} option ")
    return merged
