"""Every config value is checked when the config is loaded: types, ranges, and null only where it
means something. A bad value is one line naming the key and what it accepts."""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from pipeline.config_fields import rule_of
from pipeline.views import recipe_from_config
from tests.train.helpers import PYTHON, REPO, run_in_repo
from train.config import Config, ConfigError, load_config

# What makes the schema's defaults a loadable training config.
BASE = ["data.samples_per_epoch=128"]


def _load(*overrides: str) -> Config:
    return load_config(None, [*BASE, *overrides])


def _error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        _load(*overrides)
    message = str(e.value)
    assert "\n" not in message
    return message


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, typing.Any]]:
    """Every (key, field, type) of the schema, sections included as their leaves."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _leaves(tp, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, f, tp))
    return out


LEAVES = _leaves(Config)


def _nullable(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def test_every_value_has_a_rule_and_null_only_where_it_means_something():
    for key, f, tp in LEAVES:
        rule = rule_of(f)
        if tp is bool:
            continue  # true or false is all a bool can be
        assert rule is not None, f"{key} has no rule: declare it with pipeline.config_fields.setting"
        if _nullable(tp):
            assert rule.null, f"{key} accepts null: its rule must say what null means"
        else:
            assert rule.null is None, f"{key} does not accept null but its rule says what null means"


def _outside(rule, tp):
    """A value of the field's type just outside one bound of ``rule`` (None when it has none)."""
    for bound, delta in (("min", -0.5), ("above", 0.0), ("max", 0.5), ("below", 0.0)):
        limit = getattr(rule, bound)
        if limit is not None:
            x = limit + delta
            base = [a for a in typing.get_args(tp) if a is not type(None)] if _nullable(tp) else [tp]
            if base[0] is int:
                x = int(limit - 1) if bound == "min" else int(limit + 1) if bound == "max" else int(limit)
            if typing.get_origin(base[0]) is tuple:
                return [x] * len(typing.get_args(base[0]))
            return x
    return None


BOUNDED = [leaf for leaf in LEAVES if rule_of(leaf[1]) and _outside(rule_of(leaf[1]), leaf[2]) is not None]


@pytest.mark.parametrize("key, f, tp", BOUNDED, ids=lambda v: v if isinstance(v, str) else "")
def test_each_bound_is_enforced_at_load_time(key, f, tp):
    value = _outside(rule_of(f), tp)
    message = _error(f"{key}={value}")
    assert message.startswith(f"{key} must be "), message
    assert rule_of(f).allowed() in message


@pytest.mark.parametrize(
    "key, f, tp",
    [leaf for leaf in LEAVES if rule_of(leaf[1]) and rule_of(leaf[1]).choices],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_each_choice_is_enforced_and_listed(key, f, tp):
    message = _error(f"{key}=no-such-choice")
    assert (
        message
        == f"{key} must be one of {list(rule_of(f).choices)}"
        + (f" (or null: {rule_of(f).null})" if rule_of(f).null else "")
        + ", got 'no-such-choice'"
    )
    for choice in rule_of(f).choices:
        _load(f"{key}={choice}")  # every listed value is accepted


NOT_NULLABLE = [leaf for leaf in LEAVES if not _nullable(leaf[2]) and leaf[0] != "data.samples_per_epoch"]


@pytest.mark.parametrize("key, f, tp", NOT_NULLABLE, ids=lambda v: v if isinstance(v, str) else "")
def test_null_is_refused_where_it_means_nothing(key, f, tp):
    message = _error(f"{key}=null")
    assert message.startswith(f"{key} cannot be null"), message


@pytest.mark.parametrize(
    "overrides, message",
    [
        # the two values of issue #12: today the first ends in a traceback, the second runs a minute
        (["data.samples_per_epoch=null"], "data.samples_per_epoch must be set for training"),
        (["data.global_size=0"], "data.global_size must be in [1, 2048], got 0"),
        (["data.num_workers=-1"], "data.num_workers must be >= 0, got -1"),
        (["optim.base_lr=-1"], "optim.base_lr must be in (0, 1000], got -1.0"),
        (["optim.betas=[0.9, 1.0]"], "optim.betas must be in [0, 1), got (0.9, 1.0)"),
        (["optim.clip_grad_norm=0"], "optim.clip_grad_norm must be > 0 (or null: no clipping), got 0.0"),
        (["data.num_local=many"], "data.num_local: expected an integer or null (the recipe's count), got 'many'"),
        (
            ["data.samples_per_epoch=8", "data.batch_size=4", "train.grad_accum=3"],
            "data.samples_per_epoch (8) must hold at least data.batch_size x train.grad_accum (4 x 3 = 12) images",
        ),
        (["data.samples_per_epoch=3", "data.batch_size=4"], "data.samples_per_epoch (3) must be at least data.batch_size (4)"),
        (["data.recipe=two-view", "data.num_local=2"], "data.num_local must be null or 0 with data.recipe=two-view"),
        (
            ["data.augment.global_scale=[0.9, 0.2]"],
            "data.augment.global_scale must be in (0, 1], low <= high (or null: the recipe's value), got (0.9, 0.2)",
        ),
        (
            ["data.augment.blur_p=[1, 0.5]"],
            "data.augment.blur_p: expected a number or a list of 3 numbers or null (the recipe's value), got [1, 0.5]",
        ),
        (
            ["data.augment.jitter=[0.4, 0.4, 0.2, 0.6]"],
            "data.augment.jitter: the hue strength (4th value) must be in [0, 0.5], got 0.6",
        ),
        (["data.augment.blurp=0.5"], "unknown config key 'data.augment.blurp'; did you mean 'data.augment.blur_p'?"),
        (["output_dir="], "output_dir cannot be null: expected a string"),
        (["output_dir=' '"], "output_dir must be a directory path, got an empty string"),
    ],
)
def test_bad_values_name_the_key_and_what_it_accepts(overrides, message):
    assert _error(*overrides).startswith(message)


def test_values_inside_the_bounds_are_accepted():
    cfg = _load(
        "data.num_workers=0",
        "data.shuffle_buffer=0",
        "optim.warmup_epochs=0",
        "optim.min_lr=0",
        "optim.betas=[0, 0]",
        "optim.momentum=0",
        "train.seed=0",
        "data.augment.blur_p=[1, 0.1, 0.5]",
        "data.augment.global_scale=[1, 1]",
        "data.augment.jitter=[0, 0, 0, 0.5]",
        "data.num_local=0",
    )
    assert cfg.data.augment.blur_p == (1.0, 0.1, 0.5) and cfg.optim.betas == (0.0, 0.0)


def test_cli_refuses_the_issue_values_in_one_line_before_reading_shards(tmp_path):
    """Before: a TypeError traceback from len(loader) (data.global_size=0: a minute of 'no decodable
    sample'; its message is checked above, without a process)."""
    for value in ("data.samples_per_epoch=null",):
        config = str(REPO / "configs" / "default.yaml")
        done = run_in_repo([PYTHON, "-m", "train", "--config", config, value, f"data.shards={tmp_path / 'none'}"], timeout=120)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"config error: {value.split('=')[0]} must be"), lines


def test_the_training_config_carries_the_overrides():
    cfg = load_config(
        None,
        [
            "data.samples_per_epoch=64",
            "data.augment.blur_p=[0.9, 0.3, 0.1]",
            "data.augment.interpolation=bilinear",
            "data.augment.global_scale=[0.4, 1]",
        ],
    )
    views = recipe_from_config(cfg.data).views
    assert [v.photometric.blur_p for v in views[:3]] == [0.9, 0.3, 0.1]
    assert views[0].scale == (0.4, 1.0) and {v.interpolation for v in views} == {"bilinear"}
