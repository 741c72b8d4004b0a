"""Reading the project's JSON-lines logs (``runs/bench.jsonl``, a run's ``log.jsonl``, evaluation lines)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, in order; blank lines skipped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not a JSON object (the message says which).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not a JSON line ({e.msg}); fix or delete that line") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{n} is not a JSON object; fix or delete that line")
        records.append(record)
    return records
