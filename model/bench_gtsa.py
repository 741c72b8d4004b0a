"""Microbenchmark of one full GTSA step, the 18 pairs batched vs looped in Python.

A step is what training does: EMA update of the teacher, student forward on every view (one ViT
call per resolution), teacher forward on the global views, the three losses, backward, AdamW step.
Inputs are synthetic (random normalised views; real GTSA view geometry with quarter turns from the
shared sampler), so the figures measure the model and the objective, not the loader.

    python -m model.bench --method gtsa --device cpu --arch vit_tiny_patch16_224 --batch-size 4 --steps 3
    python -m model.bench --method gtsa --device cuda --batch-size 64 --bf16
    python -m model.bench --method gtsa --config configs/gtsa_tiny.yaml    # a preset's model and views
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor

from model.bench_step import Variant, best_times, variant_names
from model.gtsa import GTSA
from model.registry import METHODS
from pipeline.batch import ViewBatch
from pipeline.views import named_recipe, sample_views


def gtsa_synthetic_batch(
    batch_size: int, global_size: int, local_size: int, num_local: int, device: str = "cpu", seed: int = 0
) -> ViewBatch:
    """Random normalised views with GTSA geometry (overlap rule, quarter turns) from
    :func:`pipeline.views.sample_views`; ``rotation`` holds the sampled quarter turns."""
    recipe = named_recipe("gtsa", global_size, local_size, num_local)
    rng = random.Random(seed)
    sizes = [(rng.randint(300, 640), rng.randint(300, 640)) for _ in range(batch_size)]
    draws = [sample_views(w, h, recipe, rng) for w, h in sizes]
    gen = torch.Generator().manual_seed(seed)
    views = [torch.randn(batch_size, 3, s, s, generator=gen).to(device) for s in recipe.sizes]
    return ViewBatch(
        views=views,
        matrices=torch.tensor(np.stack([d.matrices for d in draws]), dtype=torch.float32, device=device),
        image_size=torch.tensor(sizes, device=device),
        rotation=torch.tensor(np.stack([np.asarray(d.turns) for d in draws]), dtype=torch.long, device=device),
    )


def gtsa_objective(model: GTSA, emb: Any, batch: ViewBatch) -> Tensor:
    """Aligned + patch-correspondence losses alone on fixed maps."""
    aligned, _, pc = model.objective(emb.student, emb.teacher, emb.teacher_size, batch.matrices)
    return aligned.mean() + pc.mean()


def variant(args: argparse.Namespace, name: str, batch: ViewBatch) -> Variant:
    """Seeded GTSA with AdamW (no decay on norms, biases and tokens), its pairs batched or looped."""
    torch.manual_seed(0)
    opts = {**args.options, "batched_pairs": name == "batched", "pc_warmup_epochs": 0}
    model: GTSA = METHODS["gtsa"](opts).to(args.device).train()
    if args.compile:
        model.student.compile()
        model.teacher.compile()
    groups = [{"params": g["params"], "weight_decay": 0.04 if g["decay"] else 0.0} for g in model.parameter_groups()]
    return Variant(name, model, torch.optim.AdamW(groups, lr=1e-4), batch, args, gtsa_objective, "maps")


def _resolve(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags over the preset (``--config``) over the built-in defaults; sets ``args.options``."""
    data, options = {}, {}
    if args.config:
        try:
            with open(args.config) as f:
                raw = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as e:
            p.error(f"--config {args.config}: {e}")
        if raw.get("method", {}).get("name") != "gtsa":
            p.error(f"--config {args.config} is not a gtsa preset (method.name)")
        data, options = raw.get("data", {}), dict(raw["method"].get("options") or {})
    for flag, key, default in (
        ("batch_size", "batch_size", 32),
        ("global_size", "global_size", 224),
        ("local_size", "local_size", 96),
        ("num_local", "num_local", 8),
    ):
        if getattr(args, flag) is None:
            setattr(args, flag, data.get(key) or default)
    options.setdefault("arch", "vit_small_patch16_224")
    options.setdefault("img_size", args.global_size)
    if args.arch:
        options["arch"] = args.arch
    if args.patch_size:
        options["model_kwargs"] = {**(options.get("model_kwargs") or {}), "patch_size": args.patch_size}
    args.options = options


def main(argv: list[str] | None = None) -> None:
    """Command line of ``python -m model.bench --method gtsa``: times the variants and prints a table."""
    p = argparse.ArgumentParser(
        prog="python -m model.bench --method gtsa",
        description="Time one full GTSA training step (ViT student + EMA teacher, 2 global + N local views, "
        "aligned + patch-correspondence + rotation losses), with the 18 (teacher, student) pairs batched vs "
        "looped in Python. Synthetic inputs; prints images/s.",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--config",
        default=None,
        help="training preset (YAML) whose method options, view sizes and batch size to use; the flags below override it",
    )
    p.add_argument("--arch", default=None, help="timm ViT name (default vit_small_patch16_224)")
    p.add_argument("--patch-size", type=int, default=None, help="override the ViT's patch size")
    p.add_argument("--batch-size", type=int, default=None, help="images per step, each gives 2 + N views (default 32)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--rounds", type=int, default=2, help="timing rounds, alternating variants; best round reported")
    p.add_argument("--global-size", type=int, default=None, help="default 224")
    p.add_argument("--local-size", type=int, default=None, help="default 96")
    p.add_argument("--num-local", type=int, default=None, help="default 8")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (geometry and losses stay fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the student and the teacher")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--variants", default="batched,looped", help="comma list of batched, looped")
    args = p.parse_args(argv)
    _resolve(p, args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available")
    variants = variant_names(p, args)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    batch = gtsa_synthetic_batch(args.batch_size, args.global_size, args.local_size, args.num_local, args.device)
    print(
        f"GTSA step: {args.options['arch']} {args.options.get('model_kwargs') or ''}"
        + f", batch {args.batch_size}, views 2x{args.global_size} + {args.num_local}x{args.local_size}, "
        f"device {args.device}"
        + (f" ({torch.cuda.get_device_name(args.device)})" if args.device.startswith("cuda") else "")
        + f", bf16={args.bf16}, compile={args.compile}, torch {torch.__version__}"
    )
    runs = [variant(args, v, batch) for v in variants]
    best = best_times(runs, args.warmup, args.rounds, args.steps, args.steps)
    print(f"{'pairs':<8} {'images/s':>10} {'ms/step':>10} {'loss ms (fwd+bwd)':>18}  loss (aligned / pc / rot)")
    for r in runs:
        o, (step_s, loss_s) = r.out, best[r.name]
        print(
            f"{r.name:<8} {args.batch_size / step_s:>10.1f} {1e3 * step_s:>10.1f} {1e3 * loss_s:>18.2f}  "
            f"{o['loss'].item():.4f} ({o['aligned'].item():.4f} / {o['pc'].item():.4f} / {o['rot'].item():.4f})"
        )
    if args.device.startswith("cuda"):
        print(f"peak GPU memory (all variants): {torch.cuda.max_memory_allocated(args.device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
