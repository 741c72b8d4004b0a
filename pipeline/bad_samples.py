"""Skip-and-count for bad samples inside a worker's batch, shared by the cpu and torch backends."""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from typing import Any

from pipeline.data_issues import note_bad_sample
from pipeline.decode import DecodeError, recovered_decodes
from pipeline.source import RawSample
from pipeline.views import overlap_violations


class BadSampleGuard:
    """Runs ``make(sample, rng)`` over a batch; a sample that fails is counted in
    ``counters["bad_samples"]`` and never kills the worker. A sample made from a damaged JPEG that
    only the lenient fallback decoder could read (:func:`pipeline.decode.recovered_decodes`) is kept
    and counted in ``counters["recovered_samples"]``; ``counters["image_bytes"]`` adds up the
    encoded bytes of every sample handled (good or bad), i.e. the image bytes read from the shards.

    ``fill_bad``: replace a bad sample by another good sample of the batch (or the worker's last
    good one) made again with the bad position's RNG, so batches keep their size; otherwise drop it.
    """

    def __init__(self, fill_bad: bool = True):
        self.fill_bad = fill_bad
        self._last_good: RawSample | None = None
        self._warned = False

    def _try(self, make: Callable, sample: RawSample, rng: random.Random, counters: dict[str, int]) -> Any | None:
        before, violations = recovered_decodes(), overlap_violations()
        try:
            out = make(sample, rng)
            if recovered_decodes() != before:
                counters["recovered_samples"] = counters.get("recovered_samples", 0) + 1
            if overlap_violations() != violations:  # a view kept although it breaks the overlap rule
                counters["overlap_violations"] = counters.get("overlap_violations", 0) + overlap_violations() - violations
            return out
        except DecodeError:
            pass
        except Exception as e:  # never kill a worker over one sample, but say what happened once
            if not self._warned:
                warnings.warn(f"skipping sample {sample.key!r} of {sample.url}: {type(e).__name__}: {e}", stacklevel=3)
                self._warned = True
        note_bad_sample(counters, sample.url, sample.key)  # a sample read again is not counted again
        return None

    def run(
        self,
        make: Callable[[RawSample, random.Random], Any],
        samples: list[RawSample],
        rngs: list[random.Random],
        counters: dict[str, int],
    ) -> list[Any] | None:
        """Results in batch order, or None when nothing usable is left."""
        counters["image_bytes"] = counters.get("image_bytes", 0) + sum(len(s.image or b"") for s in samples)
        results = [self._try(make, s, r, counters) for s, r in zip(samples, rngs)]
        good = [i for i, r in enumerate(results) if r is not None]
        counters["samples"] = counters.get("samples", 0) + len(good)
        if good:
            self._last_good = samples[good[-1]]
        if not self.fill_bad:
            return [r for r in results if r is not None] or None
        for i, r in enumerate(results):
            if r is not None:
                continue
            donor = samples[rngs[i].choice(good)] if good else self._last_good
            if donor is None:
                return None
            try:  # the donor was made once already: a failure here is a non-deterministic bug
                results[i] = make(donor, rngs[i])
            except Exception:
                return None
        return results
