"""shards.parallel.run_jobs: workers start clean (spawned), not as copies of the parent's memory."""

from __future__ import annotations

import os

from shards import parallel

LISTING: list[dict] = []  # filled in the parent below; a forked worker would inherit it


def _what_the_worker_holds(_job: int) -> tuple[int, int, int]:
    return os.getpid(), os.getppid(), len(LISTING)


def test_workers_do_not_inherit_the_parents_listing():
    LISTING.extend({"path": f"/data/{i}.jpg", "key": str(i)} for i in range(20_000))
    try:
        results = list(parallel.run_jobs(_what_the_worker_holds, [0, 1, 2, 3], workers=2, total=0, desc="t", progress=False))
    finally:
        LISTING.clear()
    assert all(pid != os.getpid() and parent == os.getpid() for pid, parent, _ in results)  # our children
    assert all(held == 0 for _, _, held in results)
