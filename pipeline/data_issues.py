"""Bad samples and bad shards, each counted once, and the limit above which a run stops.

Workers keep their counters in a plain dict (``counters``). The functions here add to it:

- ``bad_samples``: distinct samples (shard URL + key) that could not be used; a sample read again
  (resampled shards, a refilled shuffle buffer, the next epoch) is not counted again.
  ``bad_reads`` counts every failed read and, with ``samples`` (good reads), gives the share of
  reads that failed.
- ``bad_shards``: distinct shards that could not be opened or read to their end, **empty shards**
  (zero-length files, tars without one sample) included; ``empty_shards`` counts those alone.

Identities of newly seen bad samples and shards travel from the workers to the main process with
each batch (:func:`take_new`), where the loader keeps one set per run, so that counts are distinct
across workers and epochs too. :func:`check_bad_fraction` stops a run whose share of bad shards or
bad reads is above ``data.max_bad_fraction``, in one line naming the shards.
"""

from __future__ import annotations

from typing import Any

_SEEN = "_seen"  # set of (kind, id) this worker has counted
_NEW = "_new"  # list of (kind, id) not yet shipped with a batch
KINDS = ("sample", "shard", "empty")
# The share of bad reads is judged once at least this many samples were read (a single bad sample
# among the first few would otherwise stop a run); the share of bad shards is judged at once.
MIN_READS = 200


class DataQualityError(ValueError):
    """Too many bad shards or samples (reported as one line)."""


def _note(counters: dict[str, Any], kind: str, ident: str, counter: str) -> bool:
    seen = counters.setdefault(_SEEN, set())
    if (kind, ident) in seen:
        return False
    seen.add((kind, ident))
    counters.setdefault(_NEW, []).append((kind, ident))
    counters[counter] = counters.get(counter, 0) + 1
    return True


def note_bad_sample(counters: dict[str, Any], url: str, key: str) -> None:
    """Count one failed read of sample ``key`` of shard ``url`` (distinct samples once)."""
    counters["bad_reads"] = counters.get("bad_reads", 0) + 1
    _note(counters, "sample", f"{url}#{key}", "bad_samples")


def note_bad_shard(counters: dict[str, Any], url: str, empty: bool = False) -> None:
    """Count shard ``url`` as unreadable (or, with ``empty``, as holding no sample), once."""
    if empty:
        _note(counters, "empty", url, "empty_shards")
    _note(counters, "shard", url, "bad_shards")


def numeric(counters: dict[str, Any]) -> dict[str, int]:
    """The integer counters only (what is summed and logged)."""
    return {k: v for k, v in counters.items() if not k.startswith("_") and isinstance(v, int)}


def take_new(counters: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(kind, id)`` pairs noted since the last call (shipped with a batch)."""
    new = counters.get(_NEW) or []
    counters[_NEW] = []
    return list(new)


class IssueSets:
    """The main process's distinct bad samples, bad shards and empty shards of a run."""

    def __init__(self) -> None:
        self.sets: dict[str, set[str]] = {k: set() for k in KINDS}

    def add(self, items: list[tuple[str, str]]) -> None:
        """Add what a worker shipped with a batch."""
        for kind, ident in items:
            self.sets.setdefault(kind, set()).add(ident)

    def counts(self) -> dict[str, int]:
        """``bad_samples``, ``bad_shards`` (empty ones included) and ``empty_shards``, distinct."""
        return {
            "bad_samples": len(self.sets["sample"]),
            "bad_shards": len(self.sets["shard"]),
            "empty_shards": len(self.sets["empty"]),
        }

    def shard_names(self) -> list[str]:
        """Shards that were unreadable or empty, then shards holding bad samples; sorted."""
        holding = {s.rsplit("#", 1)[0] for s in self.sets["sample"]}
        return sorted(self.sets["shard"]) + sorted(holding - self.sets["shard"])


def check_bad_fraction(
    counts: dict[str, float], shards: int, max_fraction: float, names: list[str], key: str = "data.max_bad_fraction"
) -> None:
    """One-line :class:`DataQualityError` when bad shards exceed ``max_fraction`` of ``shards``, or
    bad reads exceed it of all reads (once :data:`MIN_READS` were read).

    ``counts``: ``bad_shards``, ``empty_shards``, ``bad_reads`` and ``samples`` (good reads)."""
    bad_shards, empty = int(counts.get("bad_shards", 0)), int(counts.get("empty_shards", 0))
    reads = counts.get("samples", 0) + counts.get("bad_reads", 0)
    problem = None
    if shards and bad_shards / shards > max_fraction:
        empty_text = f", {empty} of them empty" if empty else ""
        problem = f"{bad_shards} of {shards} shards unreadable{empty_text} ({100 * bad_shards / shards:.1f}%)"
    elif reads >= MIN_READS and counts.get("bad_reads", 0) / reads > max_fraction:
        share = counts["bad_reads"] / reads
        problem = f"{100 * share:.1f}% of sample reads failed ({int(counts['bad_reads'])} of {int(reads)})"
    if problem is None:
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise DataQualityError(
        f"{problem}, above {key}={max_fraction}: {shown or 'see the loader stats'}; "
        "check them with python -m shards verify, or raise the limit"
    )
