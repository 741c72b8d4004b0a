"""Where a recipe's time goes in the cpu backend: ``python -m pipeline.profile_recipe --help``.

Runs the cpu backend's own per-sample code (:func:`pipeline.backends.cpu_backend.make_views`, then
:func:`~pipeline.backends.cpu_backend.collate_views`) in this one process, on one thread, over
``--images`` samples of the shards, with a timer wrapped around each step it calls: drawing the
views, decoding, each view's crop + resize, each photometric op, collating. Steps are split by
view size (global / local views), so the table says where the time goes per op and per view.
What no step claims (flips, rotations, matrices, Python glue) is the ``other`` row. Timers cost
about a microsecond per call; the untimed run's ms/image is printed beside the timed one.

Example::

    python -m pipeline.profile_recipe --shards data/shards/bench --recipe clove --images 512
"""

from __future__ import annotations

import argparse
import functools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice

import torch

from pipeline.backends import cpu_backend, photometric_cpu
from pipeline.source import list_shards, read_shard
from pipeline.views import RECIPES, Recipe, named_recipe


def _size_of(name: str, args: tuple) -> str:
    """The view size a call works on, read from its arguments (a view array or an output size)."""
    if name == "resize":
        return str(args[2])
    shape = getattr(args[0], "shape", None)
    return str(shape[0]) if shape is not None and len(shape) >= 2 else ""


@contextmanager
def timed_steps(totals: Counter) -> Iterator[None]:
    """Wrap the cpu backend's steps with timers adding seconds to ``totals[(step, view size)]``."""
    targets: list[tuple[object, str, str]] = [
        (cpu_backend, "draw_views", "draw"),
        (cpu_backend, "decode_for_views", "decode"),
        (cpu_backend, "resize_crop", "resize"),
        (photometric_cpu, "to_grayscale", "grayscale"),
        (photometric_cpu, "gaussian_blur", "blur"),
        (photometric_cpu, "solarize", "solarize"),
        (cpu_backend, "collate_views", "collate"),
    ]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in targets]
    jitter = dict(photometric_cpu._JITTER_OPS)

    def wrap(fn: Callable, name: str) -> Callable:
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            totals[(name, _size_of(name, args))] += time.perf_counter() - t0
            return out

        return timed

    try:
        for obj, attr, name in targets:
            setattr(obj, attr, wrap(getattr(obj, attr), name))
        for op, fn in jitter.items():
            photometric_cpu._JITTER_OPS[op] = wrap(fn, fn.__name__.removeprefix("adjust_"))
        yield
    finally:
        for obj, attr, fn in saved:
            setattr(obj, attr, fn)
        photometric_cpu._JITTER_OPS.update(jitter)


def run_samples(samples: list, recipe: Recipe, batch_size: int, seed: int) -> float:
    """Make and collate every sample's views as the cpu backend's workers do; returns seconds."""
    t0 = time.perf_counter()
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        items = [cpu_backend.make_views(s, recipe, random.Random(seed + start + i)) for i, s in enumerate(chunk)]
        cpu_backend.collate_views(items)
    return time.perf_counter() - t0


def profile(samples: list, recipe: Recipe, batch_size: int = 64, seed: int = 0) -> tuple[float, float, Counter]:
    """``(untimed s/image, timed s/image, seconds per (step, view size))`` over ``samples``."""
    run_samples(samples, recipe, batch_size, seed)  # warm-up: page cache, allocator, lazy imports
    plain = run_samples(samples, recipe, batch_size, seed) / len(samples)
    totals: Counter = Counter()
    with timed_steps(totals):
        timed = run_samples(samples, recipe, batch_size, seed) / len(samples)
    return plain, timed, totals


def main(argv: list[str] | None = None) -> int:
    """Print the per-step table for one recipe; returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.profile_recipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shards", required=True, help="shard directory, glob, brace pattern or URL")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="clove", help="view recipe (default clove)")
    ap.add_argument("--global-size", type=int, default=224, help="global view size (default 224)")
    ap.add_argument("--local-size", type=int, default=96, help="local view size (default 96)")
    ap.add_argument("--images", type=int, default=512, help="samples to profile (default 512)")
    ap.add_argument("--batch-size", type=int, default=64, help="samples per collated batch (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # what a DataLoader worker runs with
    urls = list_shards(args.shards)
    if not urls:
        ap.error(f"no shards match {args.shards!r}")
    samples = list(islice((s for url in urls for s in read_shard(url)), args.images))
    recipe = named_recipe(args.recipe, args.global_size, args.local_size)
    plain, timed, totals = profile(samples, recipe, args.batch_size, args.seed)
    views = Counter(str(spec.size) for spec in recipe.views)
    print(
        f"{args.recipe}: {len(samples)} images, views {' + '.join(f'{n}x{s}' for s, n in views.items())}, one thread; "
        f"{1e3 * plain:.2f} ms/image untimed, {1e3 * timed:.2f} ms/image timed"
    )
    print(f"{'step':12s} {'view':>5s} {'ms/image':>9s} {'ms/view':>8s} {'share':>6s}")
    claimed = 0.0
    for (step, size), seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        per_image = seconds / len(samples)
        claimed += per_image
        per_view = f"{1e3 * per_image / views[size]:8.3f}" if size in views else " " * 8
        print(f"{step:12s} {size:>5s} {1e3 * per_image:9.3f} {per_view} {100 * per_image / timed:5.1f}%")
    other = timed - claimed
    print(f"{'other':12s} {'':>5s} {1e3 * other:9.3f} {'':8s} {100 * other / timed:5.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
