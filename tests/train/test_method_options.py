"""``method.options`` and every float key are checked at load like the rest of the config (issue 20,
item 5): strict booleans, integer and number types, ranges, sane upper bounds, finite numbers.

Before: ``zero_init_residual=maybe`` silently meant true, ``heads=0`` ended in ZeroDivisionError,
``proj_dim=abc`` in TypeError, ``base_lr=.nan`` in LinAlgError and ``data.global_size=100000`` in
MemoryErrors blamed on the shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.registry import METHODS
from tests.train.helpers import PYTHON, REPO, run_in_repo
from train.config import ConfigError, load_config

BASE = ["data.samples_per_epoch=128"]


def _error(*overrides: str, preset: str | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(preset, [*BASE, *overrides])
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(
    "override, words",
    [
        ("method.options.zero_init_residual=maybe", "true or false"),
        ("method.options.heads=0", "heads"),
        ("method.options.proj_dim=abc", "proj_dim"),
        ("method.options.proj_dim=1000000", "proj_dim"),
        ("method.options.proj_dim=128.5", "integer"),
        ("method.options.heads=3", "divide"),
        ("method.options.momentum_base=1.5", "momentum_base"),
        ("method.options.t_pos=.nan", "t_pos"),
        ("method.options.attention=sparse", "one of"),
        ("method.options.num_global=0", "num_global"),
        ("optim.base_lr=.nan", "finite"),
        ("optim.base_lr=.inf", "finite"),
        ("optim.base_lr=1e35", "base_lr"),
        ("optim.betas=[.nan, 0.999]", "finite"),
        ("optim.min_lr=-.inf", "finite"),
        ("data.global_size=100000", "global_size"),
        ("data.local_size=100000", "local_size"),
    ],
)
def test_bad_values_are_one_line_at_load(override, words):
    message = _error(override)
    assert words in message and override.split("=")[0].split(".")[-1] in message


def test_gtsa_options_are_checked_too():
    assert "pc_keep_ratio" in _error("method.name=gtsa", "method.options.pc_keep_ratio=0")
    assert "drop_path_rate" in _error("method.name=gtsa", "method.options.drop_path_rate=1.0")


def test_every_option_of_every_method_has_a_rule_and_the_defaults_pass():
    from model.option_rules import OPTION_RULES

    for name, record in METHODS.items():
        assert set(record.default_options()) <= set(OPTION_RULES), name
        load_config(None, [*BASE, f"method.name={name}", f"data.recipe={record.recipes[0]}"])


def test_direct_construction_is_checked():
    with pytest.raises(ValueError, match="zero_init_residual"):
        METHODS["clove"]({"backbone": "resnet18", "zero_init_residual": "maybe"})


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_preset_still_loads(preset):
    load_config(Path(REPO / "configs" / preset), [])


def test_cli_says_it_in_one_line():
    cmd = [PYTHON, "-m", "train", "method.options.heads=0", "data.samples_per_epoch=128", "--print-config"]
    done = run_in_repo(cmd, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "heads" in done.stderr


def test_a_method_and_a_recipe_it_cannot_train_on_are_refused_in_one_line():
    message = _error("method.name=gtsa", "data.recipe=clove")  # no quarter turns: all-zero rotation targets
    assert "method 'gtsa' cannot train on recipe 'clove'" in message and "data.recipe=gtsa" in message
    assert "\n" not in message
    for name, record in METHODS.items():  # every recipe a record lists loads
        for recipe in record.recipes:
            load_config(None, [*BASE, f"method.name={name}", f"data.recipe={recipe}"])
