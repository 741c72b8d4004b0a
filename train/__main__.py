"""``python -m train`` / ``accelerate launch -m train``: self-supervised pretraining from a config.

Run ``python -m train --help``.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
examples:
  python -m train --config configs/default.yaml                  # tiny CPU run on the bundled photos
  python -m train --config configs/default.yaml --resume auto    # continue the newest checkpoint
  python -m train --config configs/default.yaml train.epochs=2 optim.base_lr=0.5 output_dir=runs/try
  accelerate launch --multi_gpu --num_processes 8 -m train --config configs/clove_r50_imagenet.yaml \\
      data.shards=/data/shards/imagenet
  python -m train --config configs/gtsa_tiny.yaml                # tiny CPU GTSA run (ViT)
  python -m train --config configs/default.yaml --print-config   # every key with its value

overrides:
  Any config key, as section.key=value (value read as YAML: 3, 1e-3, true, null, [0.9, 0.999]).
  Sections: output_dir, data (the loader: shards, backend, recipe, sizes, batch_size per process,
  samples_per_epoch per process, ...; data.augment.* overrides the recipe's crop scales, ratio,
  interpolation, rotation, jitter strengths and the flip/jitter/gray/blur/solarize probabilities, one
  number or [global 1, global 2, locals]; null keeps the recipe's value), method (name, options:
  the method's own settings, e.g. method.options.backbone=...; methods: clove, gtsa, byol), optim
  (lars|adamw|sgd, base_lr per 256 images, warmup_epochs, weight_decay[_end], clipping), train
  (epochs, max_steps, grad_accum, mixed_precision no|bf16|fp16, seed,
  deterministic, cpu), checkpoint (every_steps, keep_last, export), log (every_steps, tensorboard).
  Every value is checked when the config loads (type, range, choices; null only where it means
  something); unknown keys are refused with the closest valid name.

outputs (in output_dir):
  checkpoints/ckpt-NNNNNNNN.pt and config.yaml, log.jsonl (one JSON record per logging step),
  tensorboard/ (when tensorboard is installed), exported/ (the student backbone in the method's own
  formats, with backbone.json; see python -m train.export --help). Weights are exported at the end;
  `python -m train.export CKPT OUT` exports any checkpoint, `python -m evaluation` measures it.

several processes on one CPU machine (testing): accelerate launch --multi_gpu --num_processes 2 -m
  train ... train.cpu=true   (Accelerate runs `--cpu --num_processes N` as ONE process unless mpirun
  is configured; `--multi_gpu` on a machine without GPUs starts N processes with the gloo backend).
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m train`` command line: ``--config``, ``--resume``, ``--print-config``, overrides."""
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Dense self-supervised pretraining (CLoVE, GTSA, or the global-only BYOL baseline) on "
        "WebDataset shards. The same command runs "
        "on one CPU core, one GPU, or many nodes under `accelerate launch`.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="configs/default.yaml", help="YAML preset (default: %(default)s)")
    p.add_argument(
        "--resume",
        metavar="auto|PATH",
        default=None,
        help="'auto': continue from the newest checkpoint in output_dir/checkpoints (start fresh if "
        "there is none); PATH: a checkpoint file or a run directory",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    return p


def main(argv: list[str] | None = None) -> int:
    """Runs ``python -m train``; returns the exit status (2 on a config or input error)."""
    args = build_parser().parse_args(argv)
    from train.config import ConfigError, dump_config, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    from train.loop import train

    try:
        result = train(cfg, resume=args.resume)
    except (OSError, ValueError) as e:
        # user-facing problems (missing shards, bad checkpoint path, full disk, read-only output, ...) in one
        # line; bugs keep their traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.is_main:
        print(result.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
