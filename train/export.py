"""``python -m train.export CKPT OUT``: export the student backbone of any checkpoint.

The run's method is rebuilt from the config stored in the checkpoint, its weights are loaded with
``strict=True``, and the method's own ``export`` writes its backbone's formats (the method
contract, ``model/contract.py``): torchvision and detectron2 files for a ResNet, a timm state dict
for a ViT, each with a ``backbone.json`` that ``python -m evaluation`` reads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from torch import nn


def method_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """The run's method (built from the checkpoint's config) with the checkpoint's weights."""
    from model.registry import METHODS
    from train.config import config_from_dict

    cfg = config_from_dict(ckpt["config"])
    options = dict(cfg.method.options)
    options.pop("weights", None)  # the checkpoint holds the weights; do not require the init file
    method = METHODS[cfg.method.name](options)
    method.load_state_dict(ckpt["model"], strict=True)
    return method


def export_checkpoint(path: str | Path, out_dir: str | Path) -> tuple[Path, dict[str, Path]]:
    """Export the student backbone of checkpoint ``path`` (a file, or a run directory: its newest
    checkpoint) into ``out_dir``; returns the checkpoint used and the written files by kind."""
    from train.checkpoint import load_resume

    ckpt_path, state = load_resume(str(path), Path(path))
    return ckpt_path, method_from_checkpoint(state).export(out_dir)


def main(argv: list[str] | None = None) -> int:
    """Runs ``python -m train.export CKPT OUT`` and lists the written files; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m train.export",
        description="Export the student backbone of a densessl checkpoint in its method's formats: "
        "for ResNets torchvision weights (strict=True into torchvision.models.resnetXX()) and, for "
        "ResNet-50/101/152, detectron2's format with the config lines it needs (STRIDE_IN_1X1: False, "
        "RGB input); for ViTs a timm state dict (strict=True into timm.create_model). Every export "
        "also writes backbone.json, which `python -m evaluation --checkpoint OUT` reads.",
    )
    parser.add_argument("checkpoint", help="checkpoint file (ckpt-*.pt), or a run directory (its newest checkpoint)")
    parser.add_argument("out", help="output directory for the exported files")
    args = parser.parse_args(argv)
    try:
        path, written = export_checkpoint(args.checkpoint, args.out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported the student backbone of {path}:")
    for kind, p in written.items():
        print(f"  {kind:18s} {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
