"""Which backbones to evaluate: ``--checkpoint`` specs -> frozen :class:`DenseFeatures`.

Spec syntax (one per ``--checkpoint`` value):

- ``random:ARCH`` -- random init, the library's own (e.g. ``random:resnet18``);
- ``random-zero:ARCH`` -- random init with every residual block's last norm zeroed (CLoVE's step 0);
- ``DIR`` holding ``backbone.json`` -- a method's export;
- ``ckpt-*.pt`` -- a training checkpoint: the method is rebuilt from the config inside it, loaded
  (strict), and exported to a temporary directory through the method contract;
- a run directory -- its newest checkpoint, or with ``all_steps`` every checkpoint (one row per step).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from model.features import EXPORT_META, DenseFeatures, load_exported, random_features
from train.checkpoint import list_checkpoints, load_checkpoint, resolve_resume

RANDOM_PREFIXES = {"random": "default", "random-zero": "zero_residual"}


def features_from_checkpoint(path: str | Path) -> DenseFeatures:
    """Rebuild the run's method from checkpoint ``path``, export its backbone, load it frozen."""
    from model.registry import METHODS
    from train.config import config_from_dict

    ckpt = load_checkpoint(path)
    cfg = config_from_dict(ckpt["config"])
    options = dict(cfg.method.options)
    options.pop("weights", None)  # the checkpoint holds the weights; the init file is not needed
    method = METHODS[cfg.method.name](options)
    if not callable(getattr(method, "export", None)):  # the method contract's export (model/contract.py)
        raise ValueError(f"method {cfg.method.name!r} has no export(out_dir); it cannot be evaluated from a checkpoint")
    method.load_state_dict(ckpt["model"], strict=True)
    with tempfile.TemporaryDirectory(prefix="densessl-eval-") as tmp:
        method.export(tmp)
        features = load_exported(tmp)
    step = int(ckpt.get("step", -1))
    features.info.update(method=cfg.method.name, checkpoint=str(path), step=step, source=str(path), trained_on=cfg.data.shards)
    features.name = f"{cfg.method.name} {features.info.get('arch', '')} step {step}".replace("  ", " ")
    return features


def expand_spec(spec: str, all_steps: bool = False, seed: int = 0) -> list[tuple[str, Callable[[], DenseFeatures]]]:
    """``(label, builder)`` per model of one spec; builders are lazy so that rows load one at a time."""
    prefix, _, arch = spec.partition(":")
    if prefix in RANDOM_PREFIXES and arch:
        init = RANDOM_PREFIXES[prefix]
        return [(spec, lambda: random_features(arch, init, seed))]
    path = Path(spec)
    if path.is_dir() and (path / EXPORT_META).is_file():
        return [(spec, lambda: load_exported(path))]
    if path.is_dir() and all_steps:
        found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"no ckpt-*.pt in {path} or {path / 'checkpoints'}")
        return [(str(p), lambda p=p: features_from_checkpoint(p)) for p in found]
    if path.exists():
        ckpt = resolve_resume(str(path), path)
        return [(str(ckpt), lambda: features_from_checkpoint(ckpt))]
    raise FileNotFoundError(
        f"--checkpoint {spec!r}: not random:ARCH, random-zero:ARCH, an export dir, a checkpoint file or a run dir"
    )
