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
import time

import numpy as np
import torch

from model.clove import CLoVE
from model.registry import METHODS
from pipeline.batch import ViewBatch
from pipeline.views import clove_recipe, sample_views


def synthetic_batch(batch_size: int, global_size: int, local_size: int, num_local: int, device: str) -> ViewBatch:
    """Random normalised views with matrices drawn by :func:`pipeline.views.sample_views`."""
    recipe = clove_recipe(global_size, local_size, num_local)
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


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(args: argparse.Namespace, batched: bool) -> CLoVE:
    torch.manual_seed(0)
    cfg = {"backbone": args.backbone, "channels_last": args.channels_last, "batched_pairs": batched}
    if args.proj_hidden:
        cfg["proj_hidden"] = args.proj_hidden
    model = METHODS["clove"](cfg).to(args.device).train()
    if args.compile:
        # compile the networks in place (parameter names unchanged); static shapes: one graph per
        # view resolution (dynamic-shape graphs of the ResNet trip an inductor assertion in torch 2.11)
        model.student.compile(dynamic=False)
        model.teacher.compile(dynamic=False)
        model.compile_objective()
    return model


def time_variant(args: argparse.Namespace, batched: bool, batch: ViewBatch) -> dict[str, float]:
    """Seconds per full step and per loss-only step (objective forward + backward)."""
    model = build(args, batched)
    opt = torch.optim.SGD(model.student.parameters(), lr=1e-3, momentum=0.9)
    amp = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)

    def step(i: int) -> float:
        model.update_teacher(model.teacher_momentum(i, 1000))
        with amp:
            out = model(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return out["loss"].item()

    for i in range(args.warmup):
        step(i)
    _sync(args.device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        loss = step(args.warmup + i)
    _sync(args.device)
    full = (time.perf_counter() - t0) / args.steps

    # the objective alone, on fixed embeddings: where batching the pairs matters
    with torch.no_grad(), amp:
        emb = model.embed(batch)
    for g in emb.student:
        g.emb = g.emb.detach().requires_grad_(True)
    reps = max(args.steps, 10)
    for i in range(args.warmup + reps):
        if i == args.warmup:
            _sync(args.device)
            t0 = time.perf_counter()
        obj = model.objective(emb, batch.matrices)[0]
        obj.backward()
    _sync(args.device)
    loss_only = (time.perf_counter() - t0) / reps
    return {"step_s": full, "loss_s": loss_only, "loss": loss}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m model.bench",
        description="Time one full CLoVE training step (student + EMA teacher, 2 global + N local views), "
        "with the (student, teacher) pairs batched vs looped in Python. Synthetic inputs; prints images/s.",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--backbone", default="resnet50", help="torchvision ResNet name (resnet18 for CPU)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step (each gives 2 + N views)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    p.add_argument("--global-size", type=int, default=224)
    p.add_argument("--local-size", type=int, default=96)
    p.add_argument("--num-local", type=int, default=6)
    p.add_argument("--proj-hidden", type=int, default=0, help="projector hidden width (0: the default 4096)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (the loss stays fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last model and inputs")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks and the objective")
    p.add_argument("--variants", default="batched,looped", help="comma list of batched, looped")
    args = p.parse_args(argv)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            p.error("--device cuda but no CUDA device is available")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in ("batched", "looped") for v in variants):
        p.error(f"--variants takes batched and/or looped, got {args.variants!r}")
    if args.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))

    batch = synthetic_batch(args.batch_size, args.global_size, args.local_size, args.num_local, args.device)
    print(
        f"CLoVE step: {args.backbone}, batch {args.batch_size}, views 2x{args.global_size} + "
        f"{args.num_local}x{args.local_size}, device {args.device}"
        + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else "")
        + f", bf16={args.bf16}, channels_last={args.channels_last}, compile={args.compile}, torch {torch.__version__}"
    )
    print(f"{'pairs':<8} {'images/s':>10} {'ms/step':>10} {'loss ms (fwd+bwd)':>18}  loss")
    for v in variants:
        r = time_variant(args, v == "batched", batch)
        print(
            f"{v:<8} {args.batch_size / r['step_s']:>10.1f} {1e3 * r['step_s']:>10.1f} "
            f"{1e3 * r['loss_s']:>18.2f}  {r['loss']:.4f}"
        )
    if args.device.startswith("cuda"):
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(args.device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
