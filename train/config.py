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
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import LoaderConfig, check_loader_config
from pipeline.config_fields import check_fields, rule_of, setting

OPTIMIZERS = ("lars", "adamw", "sgd")  # sgd: plain SGD with momentum (baselines, linear updates in tests)
PRECISIONS = ("no", "bf16", "fp16")
MAX_SEED = 2**31 - 1


class ConfigError(ValueError):
    """A config problem, always reported as one line."""


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's scalars: ``1e-3`` is a float (YAML 1.1 wants ``1.0e-3``) and only
    true/false are booleans (YAML 1.1 also reads yes/no/on/off, so ``train.mixed_precision=no``
    would arrive as False)."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader subclass


@dataclass
class MethodConfig:
    """Which method (``model.registry.METHODS``) and its options (``method_defaults(name)``)."""

    name: str = setting("clove", free=True)  # checked against the registry
    options: dict[str, Any] = setting(default_factory=dict, free=True)  # missing keys take the method's defaults


@dataclass
class OptimConfig:
    """Optimizer and the per-iteration lr / weight-decay schedules (``model/schedule.py``)."""

    name: str = setting("lars", choices=OPTIMIZERS)  # lars (CLoVE) | adamw (GTSA) | sgd
    # for 256 images; peak lr = base_lr * batch_size * processes * grad_accum / 256 (above 1000: a typo)
    base_lr: float = setting(1.0, above=0, max=1000)
    warmup_epochs: float = setting(5.0, min=0)  # linear warm-up, then cosine down to the floor
    # absolute floor of the cosine (GTSA: 1e-6)
    min_lr: float | None = setting(None, min=0, null="optim.min_lr_ratio x the peak lr")
    min_lr_ratio: float = setting(0.01, min=0, max=1)  # floor relative to the peak (CLoVE: 1 %)
    weight_decay: float = setting(2e-5, min=0)  # never applied to 1-D parameters (biases, norms)
    # cosine from weight_decay to this (GTSA: 0.04 -> 0.4)
    weight_decay_end: float | None = setting(None, min=0, null="constant weight decay")
    momentum: float = setting(0.9, min=0, below=1)  # LARS
    trust_coefficient: float = setting(1e-3, above=0)  # LARS; 1-D parameters are not adapted
    betas: tuple[float, float] = setting((0.9, 0.999), min=0, below=1)  # AdamW
    eps: float = setting(1e-8, above=0)  # AdamW
    clip_grad_norm: float | None = setting(None, above=0, null="no clipping")  # global L2 norm over all parameters
    clip_grad_per_param: float | None = setting(None, above=0, null="no clipping")  # L2 norm of each parameter tensor (GTSA: 3.0)


@dataclass
class TrainConfig:
    """Length, precision, distribution and reproducibility."""

    epochs: int = setting(1, min=1)  # schedules span this many epochs
    # stop after this many optimizer steps (schedules unchanged)
    max_steps: int | None = setting(None, min=1, null="run every step of the schedule")
    grad_accum: int = setting(1, min=1)  # micro-batches per optimizer step
    mixed_precision: str = setting("no", choices=PRECISIONS)  # through Accelerate's autocast and grad scaler
    seed: int = setting(0, min=0, max=MAX_SEED)  # NumPy takes seeds below 2**32; each rank adds its index
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact resume on CPU
    cpu: bool = False  # train on the CPU even when CUDA is available
    threads: int | None = setting(None, min=1, null="torch's default")  # torch intra-op threads per process
    sync_bn: bool = True  # BatchNorm -> SyncBatchNorm when distributed on GPUs
    find_unused_parameters: bool = False  # DDP option, for methods with branches unused on some steps
    compile: bool = False  # torch.compile the method's step (its compile_step(); static shapes, GPU runs)
    # stop after this many optimizer steps in a row with a non-finite loss or gradients (each is
    # skipped and counted); 0: no per-step check (it costs one device sync per step; train/nonfinite.py)
    max_nonfinite_steps: int = setting(10, min=0)


@dataclass
class CheckpointConfig:
    """When checkpoints are written, how many are kept, and whether the backbone is exported at the end."""

    every_steps: int = setting(500, min=1)  # also written at the end of the run
    keep_last: int = setting(3, min=1)  # older checkpoints are deleted once a newer one is safely on disk
    export: bool = True  # export the student backbone to ``output_dir/exported`` at the end


@dataclass
class LogConfig:
    """How often and where the run logs (JSON lines, TensorBoard, progress bar)."""

    every_steps: int = setting(10, min=1)  # the only steps that read values back from the device
    tensorboard: bool = True  # through Accelerate's trackers, when tensorboard is installed
    progress: bool = True  # tqdm bar on the main process


@dataclass
class Config:
    """Everything one run needs; see ``python -m train --print-config`` for the resolved values."""

    output_dir: str = setting("runs/default", free=True)  # checkpoints/, log.jsonl, tensorboard/, exported/
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


def _describe(tp: Any) -> str:
    """A type in words, for errors: ``"an integer"``, ``"a list of 2 numbers"``, ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return "a list"
        return f"a list of {len(args)} numbers" if all(a is float for a in args) else f"a list of {len(args)} values"
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}
    if tp in words or origin in words:
        return words.get(tp) or words[origin]
    return "a section of keys" if dataclasses.is_dataclass(tp) else getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str, null: str | None = None) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats, lists for tuples.

    ``null`` says what null means for this key (named in the error when the value has the wrong type).
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, path)
            except ConfigError as e:
                errors.append(str(e))
        if len(options) == 1 and type(None) not in args:
            raise ConfigError(errors[0])
        nullable = f" or null ({null})" if null else " or null" if type(None) in args else ""
        raise ConfigError(f"{path}: expected {_describe(tp)}{nullable}, got {value!r}")
    if value is None:
        raise ConfigError(f"{path} cannot be null: expected {_describe(tp)}")
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
            raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")
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
        if not math.isfinite(value):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported config type {_describe(tp)}")  # a schema bug, not user error


def _from_dict(cls: type, raw: dict[str, Any], path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise _unknown_key(path, str(key), list(fields))
    kwargs = {}
    for k, v in raw.items():
        rule = rule_of(fields[k])
        kwargs[k] = _coerce(v, hints[k], path + k, rule.null if rule else None)
    return cls(**kwargs)


def _check_values(cfg: Config) -> None:
    """Choices, ranges and nulls the types cannot express (each field's rule), the rules between
    fields, and the method's options against its defaults."""
    from model.option_rules import check_options  # lazy: the schema itself needs no torch
    from model.registry import check_method_recipe, method_defaults

    try:  # unknown keys first, as for every other section
        defaults = method_defaults(cfg.method.name)
    except ValueError as e:
        raise ConfigError(f"method.name: {e}") from None
    for key in cfg.method.options:
        if key not in defaults:
            raise _unknown_key("method.options.", str(key), list(defaults))
    try:
        check_options(cfg.method.name, {**defaults, **cfg.method.options})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        check_fields(cfg)
        check_loader_config(cfg.data, "data.")
        check_method_recipe(cfg.method.name, cfg.data.recipe)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not cfg.output_dir.strip():
        raise ConfigError("output_dir must be a directory path, got an empty string")
    d, accum = cfg.data, cfg.train.grad_accum
    if d.samples_per_epoch is None:
        raise ConfigError(
            "data.samples_per_epoch must be set for training (images per process per epoch, e.g. the dataset's "
            "size / processes): null means one exact pass, whose batch count differs between ranks"
        )
    if d.samples_per_epoch // d.batch_size < accum:
        raise ConfigError(
            f"data.samples_per_epoch ({d.samples_per_epoch}) must hold at least data.batch_size x train.grad_accum "
            f"({d.batch_size} x {accum} = {d.batch_size * accum}) images: an epoch would have no optimizer step"
        )


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
    """The resolved config as YAML text, in field order."""
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
