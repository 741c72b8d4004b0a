"""shards.parallel.run_jobs: forked workers do not copy the parent's objects, and the parent's GC is left as it was."""

from __future__ import annotations

import gc
import os

from shards import parallel


def _frozen_in_worker(_job: int) -> tuple[int, int]:
    return os.getpid(), gc.get_freeze_count()


def test_workers_start_with_the_parents_objects_frozen_and_the_parent_is_unfrozen_after():
    listing = [{"path": f"/data/{i}.jpg", "key": str(i)} for i in range(20_000)]  # what a worker must not copy
    assert gc.get_freeze_count() == 0
    results = list(parallel.run_jobs(_frozen_in_worker, [0, 1, 2, 3], workers=2, total=0, desc="t", progress=False))
    pids = {pid for pid, _ in results}
    assert os.getpid() not in pids  # they ran in workers
    # everything the parent held when it forked (the listing included) is out of the GC's reach there
    assert all(frozen >= len(listing) for _, frozen in results)
    assert gc.get_freeze_count() == 0  # and back in reach here
