"""Microbenchmark of one full CLoVE step, with the 14 pairs batched vs looped in Python.

A step is what training does: EMA update of the teacher, student forward on every view (one
backbone call per resolution), teacher forward on the global views, the loss, backward, optimizer
step. Inputs are synthetic (random normalised views, real view geometry from the shared sampler),
so the figures measure the model and the objective, not the loader.

    python -m model.bench --device cpu --backbone resnet18 --batch-size 4 --steps 3
    python -m model.bench --device cuda --backbone resnet50 --batch-size 64 --bf16 --channels-last --compile
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

from model.bench_step import Variant, best_times, variant_names
from model.clove import CLoVE
from model.registry import METHODS
from pipeline.batch import ViewBatch
from pipeline.views import named_recipe, sample_views


def synthetic_batch(batch_size: int, global_size: int, local_size: int, num_local: int, device: str) -> ViewBatch:
    """Random normalised views with matrices drawn by :func:`pipeline.views.sample_views`."""
    recipe = named_recipe("clove", global_size, local_size, num_local)
    rng = random.Random(0)
    sizes = [(rng.randint(300, 640), rng.randint(300, 640)) for _ in range(batch_size)]
    mats = np.stack([sample_views(w, h, recipe, rng).matrices for w, h in sizes])
    views = [torch.randn(batch_size, 3, s, s, device=device) for s in recipe.sizes]
    return ViewBatch(
        views=views,
        matrices=torch.tensor(mats, dtype=torch.float32, device=device),
        image_size=torch.tensor(sizes, device=device),
        rotation=torch.zeros(batch_size, len(recipe.views), dtype=torch.long, device=device),
    )


def build(args: argparse.Namespace, batched: bool) -> CLoVE:
    """Seeded CLoVE in train mode on ``args.device``, its pairs batched or looped (compiled with ``--compile``)."""
    torch.manual_seed(0)
    cfg = {"backbone": args.backbone, "channels_last": args.channels_last, "batched_pairs": batched}
    if args.proj_hidden:
        cfg["proj_hidden"] = args.proj_hidden
    model = METHODS["clove"](cfg).to(args.device).train()
    if args.compile:
        # static shapes: one graph per view resolution (dynamic-shape graphs of the ResNet trip an
        # inductor assertion in torch 2.11); the same call as train.compile=true
        model.compile_step()
    return model


def clove_objective(model: CLoVE, emb: Any, batch: ViewBatch) -> Tensor:
    """CLoVE's loss alone on fixed embeddings."""
    return model.objective(emb, batch.matrices)[0]


def variant(args: argparse.Namespace, name: str, batch: ViewBatch) -> Variant:
    """CLoVE with SGD, its pairs batched or looped."""
    model = build(args, name == "batched")
    opt = torch.optim.SGD(model.student.parameters(), lr=1e-3, momentum=0.9)
    return Variant(name, model, opt, batch, args, clove_objective, "emb")


def main(argv: list[str] | None = None) -> None:
    """Command line of ``python -m model.bench``: times the batched and looped variants and prints a table."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", choices=("clove", "gtsa"), default="clove")
    known, rest = pre.parse_known_args(argv)
    if known.method == "gtsa":  # GTSA's step has its own options: python -m model.bench --method gtsa --help
        from model.bench_gtsa import main as gtsa_main

        return gtsa_main(rest)
    p = argparse.ArgumentParser(
        prog="python -m model.bench",
        description="Time one full CLoVE training step (student + EMA teacher, 2 global + N local views), "
        "with the (student, teacher) pairs batched vs looped in Python. Synthetic inputs; prints images/s.",
    )
    p.add_argument("--method", choices=("clove", "gtsa"), default="clove", help="gtsa: see --method gtsa --help")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--backbone", default="resnet50", help="torchvision ResNet name (resnet18 for CPU)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (each gives 2 + N views)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first (compilation happens here)")
    p.add_argument("--rounds", type=int, default=2, help="timing rounds, alternating variants; best round reported")
    p.add_argument("--global-size", type=int, default=224)
    p.add_argument("--local-size", type=int, default=96)
    p.add_argument("--num-local", type=int, default=6)
    p.add_argument("--proj-hidden", type=int, default=0, help="projector hidden width (0: the default 4096)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (the loss stays fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and inputs")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks and the objective")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--variants", default="batched,looped", help="comma list of batched, looped")
    args = p.parse_args(argv)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            p.error("--device cuda but no CUDA device is available")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    variants = variant_names(p, args)

    batch = synthetic_batch(args.batch_size, args.global_size, args.local_size, args.num_local, args.device)
    print(
        f"CLoVE step: {args.backbone}, batch {args.batch_size}, views 2x{args.global_size} + "
        f"{args.num_local}x{args.local_size}, device {args.device}"
        + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else "")
        + f", bf16={args.bf16}, channels_last={args.channels_last}, compile={args.compile}, torch {torch.__version__}"
    )
    runs = [variant(args, v, batch) for v in variants]
    best = best_times(runs, args.warmup, args.rounds, args.steps, max(args.steps, 10))
    print(f"{'pairs':<8} {'images/s':>10} {'ms/step':>10} {'loss ms (fwd+bwd)':>18}  loss")
    for r in runs:
        (step_s, loss_s), loss = best[r.name], r.out["loss"].item()
        print(f"{r.name:<8} {args.batch_size / step_s:>10.1f} {1e3 * step_s:>10.1f} {1e3 * loss_s:>18.2f}  {loss:.4f}")
    if args.device.startswith("cuda"):
        # both variants' models are alive at once: this is not one model's footprint
        print(f"peak GPU memory (all variants): {torch.cuda.max_memory_allocated(args.device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
