"""Whether a checkpoint fits the model it is loaded into, said in one line before anything loads.

A checkpoint can load (``torch.load`` succeeds) and still not fit: another method or backbone,
a missing key, tensors of other shapes, no config. ``load_state_dict`` then raises an 18-45 line
error; :func:`check_state_fits` compares first and names the mismatch, e.g. ``checkpoint is
gtsa/vit_small_patch16_224, config is clove/resnet18``. ``train --resume`` (where ``--resume
auto`` falls back past such a checkpoint) and the evaluation's checkpoint loading use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

# what ``python -m train --resume`` reads from a checkpoint (train/resume.py)
RESUME_KEYS = ("model", "optimizer", "config", "step", "epoch", "batch_in_epoch", "ranks")
# what the evaluation reads (evaluation/models.py)
EVAL_KEYS = ("model", "config")
ARCH_OPTIONS = ("backbone", "arch")  # the option that names a method's network, whichever it has


def model_label(config: Mapping[str, Any]) -> str:
    """``"clove/resnet18"``: the method and its network as a config dict (``config_to_dict``) names them."""
    method = config.get("method") if isinstance(config.get("method"), Mapping) else {}
    name = str(method.get("name", "?"))
    options = method.get("options") if isinstance(method.get("options"), Mapping) else {}
    try:
        from model.registry import method_defaults

        options = {**method_defaults(name), **options}
    except ValueError:  # an unknown method: named as it is
        pass
    arch = next((str(options[k]) for k in ARCH_OPTIONS if k in options), None)
    return f"{name}/{arch}" if arch else name


def _shape(t: Any) -> str:
    return str(list(t.shape)) if isinstance(t, Tensor) else type(t).__name__


def weights_mismatch(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """``"3 missing (e.g. 'a'), 1 of another shape (e.g. 'b': [64, 3] saved, [32, 3] expected)"`` or None."""
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [
        k
        for k in expected
        if k in saved and isinstance(saved[k], Tensor) and isinstance(expected[k], Tensor) and saved[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k!r}: {_shape(saved[k])} saved, {_shape(expected[k])} expected)")
    return ", ".join(parts) or None


def check_state_fits(
    state: Any,
    expected_weights: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    required: Sequence[str] = RESUME_KEYS,
) -> None:
    """One-line ValueError when checkpoint ``state`` does not fit: a key of ``required`` is
    missing, its method/network differs from ``config``'s (a ``config_to_dict`` dict; None: not
    compared), its optimizer differs, or its ``model`` weights differ from ``expected_weights``
    (a ``state_dict()``) in keys or shapes."""
    if not isinstance(state, Mapping):
        raise ValueError(f"not a training checkpoint (a {type(state).__name__}, not a dict of states)")
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"not a complete training checkpoint: no {', '.join(repr(k) for k in missing)}")
    saved_config = state.get("config")
    if "config" in required and not isinstance(saved_config, Mapping):
        raise ValueError(f"the checkpoint's config is a {type(saved_config).__name__}, not a mapping")
    if config is not None and isinstance(saved_config, Mapping):
        theirs, ours = model_label(saved_config), model_label(config)
        if theirs != ours:
            raise ValueError(f"checkpoint is {theirs}, config is {ours}")
        opt_theirs = (saved_config.get("optim") or {}).get("name") if isinstance(saved_config.get("optim"), Mapping) else None
        opt_ours = (config.get("optim") or {}).get("name") if isinstance(config.get("optim"), Mapping) else None
        if "optimizer" in required and opt_theirs and opt_ours and opt_theirs != opt_ours:
            raise ValueError(f"checkpoint's optimizer is {opt_theirs}, config's is {opt_ours} (optim.name)")
    weights = state.get("model")
    if not isinstance(weights, Mapping):
        raise ValueError(f"the checkpoint's 'model' is a {type(weights).__name__}, not a state dict")
    mismatch = weights_mismatch(weights, expected_weights)
    if mismatch:
        label = model_label(saved_config) if isinstance(saved_config, Mapping) else "the model"
        raise ValueError(f"weights do not fit {label}: {mismatch}")
