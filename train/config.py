"""Run configuration: a typed dataclass schema, YAML presets and ``key.sub=value`` overrides.

A run is described by one :class:`Config`. Presets live in ``configs/*.yaml``; any key can be
overridden on the command line as ``key.sub=value`` (the value is parsed as YAML, so ``3``,
``1e-3``, ``true``, ``null`` and ``[0.9, 0.999]`` mean what they look like). Unknown keys, including
the method's own options under ``method.options``, are refused with a one-line error naming the
closest valid key. The resolved config is written beside the checkpoints as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import LoaderConfig

OPTIMIZERS = ("lars", "adamw")
PRECISIONS = ("no", "bf16", "fp16")


class ConfigError(ValueError):
    """A config problem, always reported as one line."""


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class MethodConfig:
    """Which method (``model.registry.METHODS``) and its options (``method_defaults(name)``)."""

    name: str = "clove"
    options: dict[str, Any] = field(default_factory=dict)  # missing keys take the method's defaults


@dataclass
class OptimConfig:
    """Optimizer and the per-iteration lr / weight-decay schedules (``train/schedules.py``)."""

    name: str = "lars"  # lars (CLoVE) | adamw (GTSA)
    base_lr: float = 1.0  # for 256 images; peak lr = base_lr * batch_size * processes * grad_accum / 256
    warmup_epochs: float = 5.0  # linear warm-up, then cosine down to the floor
    min_lr: float | None = None  # absolute floor of the cosine (GTSA: 1e-6); None: min_lr_ratio * peak
    min_lr_ratio: float = 0.01  # floor relative to the peak (CLoVE: 1 %)
    weight_decay: float = 2e-5  # never applied to 1-D parameters (biases, norms)
    weight_decay_end: float | None = None  # cosine from weight_decay to this (GTSA: 0.04 -> 0.4); None: constant
    momentum: float = 0.9  # LARS
    trust_coefficient: float = 1e-3  # LARS; 1-D parameters are not adapted
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    eps: float = 1e-8  # AdamW
    clip_grad_norm: float | None = None  # global L2 norm over all parameters; None: off
    clip_grad_per_param: float | None = None  # L2 norm of each parameter tensor (GTSA: 3.0); None: off


@dataclass
class TrainConfig:
    """Length, precision, distribution and reproducibility."""

    epochs: int = 1  # schedules span this many epochs
    max_steps: int | None = None  # stop after this many optimizer steps (schedules unchanged); None: all
    grad_accum: int = 1  # micro-batches per optimizer step
    mixed_precision: str = "no"  # no | bf16 | fp16 (through Accelerate's autocast and grad scaler)
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact resume on CPU
    cpu: bool = False  # train on the CPU even when CUDA is available
    threads: int | None = None  # torch intra-op threads per process; None: torch's default
    sync_bn: bool = True  # BatchNorm -> SyncBatchNorm when distributed on GPUs
    find_unused_parameters: bool = False  # DDP option, for methods with branches unused on some steps


@dataclass
class CheckpointConfig:
    every_steps: int = 500  # also written at the end of the run
    keep_last: int = 3  # older checkpoints are deleted once a newer one is safely on disk
    export: bool = True  # export the student backbone to ``output_dir/exported`` at the end


@dataclass
class LogConfig:
    every_steps: int = 10  # the only steps that read values back from the device
    tensorboard: bool = True  # through Accelerate's trackers, when tensorboard is installed
    progress: bool = True  # tqdm bar on the main process


@dataclass
class Config:
    """Everything one run needs; see ``python -m train --print-config`` for the resolved values."""

    output_dir: str = "runs/default"  # checkpoints/, log.jsonl, tensorboard/, exported/
    data: LoaderConfig = field(default_factory=LoaderConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)


# ---------------------------------------------------------------------------------------------
# dict -> dataclass, with type checks and closest-key errors
# ---------------------------------------------------------------------------------------------


def _unknown_key(path: str, key: str, valid: list[str]) -> ConfigError:
    full = f"{path}{key}"
    if not valid:
        return ConfigError(f"unknown config key {full!r}: {path.rstrip('.') or 'this level'} takes no keys")
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return ConfigError(f"unknown config key {full!r}; did you mean {path + close[0]!r}?")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{path}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of keys, got {value!r}")
        return _from_dict(tp, value, path + ".")
    if tp is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], path) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, path) for v, a in zip(value, args))
    if isinstance(value, dict):  # e.g. the override train.epochs.x=1
        raise ConfigError(f"{path} is a value, not a section (got keys {', '.join(map(str, value))})")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported config type {_type_name(tp)}")  # a schema bug, not user error


def _from_dict(cls: type, raw: dict[str, Any], path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise _unknown_key(path, str(key), names)
    kwargs = {k: _coerce(v, hints[k], path + k) for k, v in raw.items()}
    return cls(**kwargs)


def _check_values(cfg: Config) -> None:
    """Choices and ranges the types cannot express; the method's options against its defaults."""
    from model.registry import method_defaults  # lazy: the schema itself needs no torch

    if cfg.optim.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name must be one of {list(OPTIMIZERS)}, got {cfg.optim.name!r}")
    if cfg.train.mixed_precision not in PRECISIONS:
        raise ConfigError(f"train.mixed_precision must be one of {list(PRECISIONS)}, got {cfg.train.mixed_precision!r}")
    for key in ("train.epochs", "train.grad_accum", "data.batch_size", "checkpoint.every_steps",
                "checkpoint.keep_last", "log.every_steps"):
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(getattr(cfg, section), name)}")
    try:
        defaults = method_defaults(cfg.method.name)
    except ValueError as e:
        raise ConfigError(f"method.name: {e}") from None
    for key in cfg.method.options:
        if key not in defaults:
            raise _unknown_key("method.options.", str(key), list(defaults))


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.base_lr=0.5"`` -> ``(["optim", "base_lr"], 0.5)``; the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    try:
        parsed = _yaml_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"override {text!r}: the value is not valid YAML") from None
    return [p.strip() for p in key.strip().split(".")], parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``key.sub=value`` in the nested dict ``raw`` (in place, and returned)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: i + 1])} is a value, not a section")
            node = child
        node[keys[-1]] = value
    return raw


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Validate a nested dict (a YAML preset plus overrides) into a :class:`Config`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config is a mapping of sections, got {type(raw).__name__}")
    cfg = _from_dict(Config, raw)
    _check_values(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Preset ``path`` (YAML; None: the schema's defaults) with ``overrides`` applied on top."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists() or path.is_dir():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = _yaml_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config is a mapping of sections")
    return config_from_dict(apply_overrides(raw, list(overrides or [])))


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), safe for YAML, JSON and ``torch.load(weights_only=True)``."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config as YAML (temp file + rename, so a crash leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dump_config(cfg))
    tmp.replace(path)
    return path


def flat_items(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for trackers and config diffs)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat_items(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
