"""Which backbones to evaluate: ``--checkpoint`` specs -> frozen :class:`DenseFeatures`.

Spec syntax (one per ``--checkpoint`` value):

- ``random:ARCH`` -- random init, the library's own (e.g. ``random:resnet18``);
- ``random-zero:ARCH`` -- random init with every residual block's last norm zeroed (CLoVE's step 0);
- ``random:CONFIG.yaml`` -- the backbone of the config's method at its own init (the config's
  architecture and options, e.g. a 4-block patch-8 ViT that no timm name describes);
- ``DIR`` holding ``backbone.json`` -- a method's export;
- ``ckpt-*.pt`` -- a training checkpoint: the method is rebuilt from the config inside it, loaded
  (strict), and exported to a temporary directory through the method contract;
- a run directory -- its newest checkpoint, or with ``all_steps`` every checkpoint (one row per step).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model.features import EXPORT_META, DenseFeatures, load_exported, random_features
from train.checkpoint import list_checkpoints, load_checkpoint, resolve_resume
from train.ckpt_fit import EVAL_KEYS, check_state_fits

RANDOM_PREFIXES = {"random": "default", "random-zero": "zero_residual"}


def _method_from_config(cfg: Any, where: str) -> Any:
    """The registered method of a run config, built from its options (the init weights file dropped)."""
    from model.registry import METHODS

    options = dict(cfg.method.options)
    options.pop("weights", None)  # a checkpoint holds the weights; a random row wants none
    method = METHODS[cfg.method.name](options)
    if not callable(getattr(method, "export", None)):  # the method contract's export (model/contract.py)
        raise ValueError(f"{where}: method {cfg.method.name!r} has no export(out_dir), so it cannot be evaluated")
    return method


def _exported_features(method: Any) -> DenseFeatures:
    """Export ``method``'s backbone through the method contract and load it frozen."""
    with tempfile.TemporaryDirectory(prefix="densessl-eval-") as tmp:
        method.export(tmp)
        return load_exported_checked(tmp)


def features_from_checkpoint(path: str | Path) -> DenseFeatures:
    """Rebuild the run's method from checkpoint ``path``, export its backbone, load it frozen."""
    from train.config import config_from_dict

    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{path}: no config in the checkpoint, so its method is unknown (not written by python -m train?)")
    try:
        cfg = config_from_dict(ckpt["config"])
    except ValueError as e:
        raise ValueError(f"{path}: the checkpoint's config is not valid here: {e}") from None
    method = _method_from_config(cfg, str(path))
    try:
        check_state_fits(ckpt, method.state_dict(), None, EVAL_KEYS)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    method.load_state_dict(ckpt["model"], strict=True)
    features = _exported_features(method)
    step = int(ckpt.get("step", -1))
    features.info.update(method=cfg.method.name, checkpoint=str(path), step=step, source=str(path), trained_on=cfg.data.shards)
    features.name = f"{cfg.method.name} {features.info.get('arch', '')} step {step}".replace("  ", " ")
    return features


def features_from_config(path: str | Path, seed: int = 0) -> DenseFeatures:
    """The backbone of config ``path``'s method at its own init, drawn from torch's RNG seeded with
    ``seed`` (the global RNG untouched): the random row of a run with an architecture no name gives."""
    from train.config import load_config

    cfg = load_config(path)
    with torch.random.fork_rng(devices=[]):  # the reload inits a model too, so it stays inside
        torch.manual_seed(seed)
        features = _exported_features(_method_from_config(cfg, str(path)))
    features.info = {k: v for k, v in features.info.items() if k not in ("method", "step")}
    features.info.update(init="default", seed=seed, config=str(path))
    features.name = f"random {features.info.get('arch', '')} ({cfg.method.name} init, {Path(path).name})"
    return features


def _load_error_line(e: BaseException) -> str:
    """The first useful line of a ``load_state_dict`` error (its messages run to dozens of lines)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    detail = next((ln for ln in lines if ln.startswith(("size mismatch", "Missing key", "Unexpected key"))), None)
    text = detail or (lines[0] if lines else type(e).__name__)
    return text if len(text) <= 300 else text[:297] + "..."


def load_exported_checked(path: str | Path) -> DenseFeatures:
    """:func:`model.features.load_exported` with one-line errors: an export whose ``backbone.json``
    disagrees with its weights (another arch, missing or extra keys, other shapes), names no
    weights file, or is not JSON raises ValueError naming the directory and the mismatch."""
    directory = Path(path)
    try:
        return load_exported(directory)
    except FileNotFoundError:
        raise
    except json.JSONDecodeError as e:
        raise ValueError(f"{directory / EXPORT_META}: not valid JSON ({e})") from None
    except ValueError as e:
        if "\n" not in str(e):
            raise
        raise ValueError(f"{directory}: {_load_error_line(e)}") from None
    except KeyError as e:
        raise ValueError(f"{directory / EXPORT_META}: no {e} entry; re-export the backbone") from None
    except (RuntimeError, TypeError, AttributeError, OSError) as e:
        meta = f"{directory / EXPORT_META}"
        try:
            info = json.loads((directory / EXPORT_META).read_text())
            meta += f" says {info.get('family')}/{info.get('arch')}"
        except (OSError, ValueError, AttributeError):
            pass
        raise ValueError(f"{meta}, but its weights do not fit: {_load_error_line(e)}") from None


def expand_spec(spec: str, all_steps: bool = False, seed: int = 0) -> list[tuple[str, Callable[[], DenseFeatures]]]:
    """``(label, builder)`` per model of one spec; builders are lazy so that rows load one at a time."""
    prefix, _, arch = spec.partition(":")
    if prefix in RANDOM_PREFIXES and arch.endswith((".yaml", ".yml")):
        if prefix != "random":
            raise ValueError(f"--checkpoint {spec!r}: a config's method has its own init; use random:{arch}")
        if not Path(arch).is_file():
            raise FileNotFoundError(f"--checkpoint {spec!r}: no config file {arch}")
        return [(spec, lambda: features_from_config(arch, seed))]
    if prefix in RANDOM_PREFIXES and arch:
        init = RANDOM_PREFIXES[prefix]
        return [(spec, lambda: random_features(arch, init, seed))]
    path = Path(spec)
    if path.is_dir() and (path / EXPORT_META).is_file():
        return [(spec, lambda: load_exported_checked(path))]
    if path.is_dir() and all_steps:
        found = list_checkpoints(path / "checkpoints") or list_checkpoints(path)
        if not found:
            raise FileNotFoundError(f"no ckpt-*.pt in {path} or {path / 'checkpoints'}")
        return [(str(p), lambda p=p: features_from_checkpoint(p)) for p in found]
    if path.exists():
        ckpt = resolve_resume(str(path), path)
        return [(str(ckpt), lambda: features_from_checkpoint(ckpt))]
    raise FileNotFoundError(
        f"--checkpoint {spec!r}: not random:ARCH, random-zero:ARCH, random:CONFIG.yaml, an export dir, "
        "a checkpoint file or a run dir"
    )
