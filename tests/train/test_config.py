"""Config schema: presets, overrides, unknown keys with the closest name, type checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.train.helpers import PYTHON, REPO, run_in_repo
from train.config import Config, ConfigError, config_to_dict, load_config, parse_override, save_config

CONFIGS = REPO / "configs"


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.base_lrr=1", "unknown config key 'optim.base_lrr'; did you mean 'optim.base_lr'?"),
        ("optimm.base_lr=1", "unknown config key 'optimm'; did you mean 'optim'?"),
        ("data.batchsize=8", "unknown config key 'data.batchsize'; did you mean 'data.batch_size'?"),
        (
            "method.options.backbon=resnet18",
            "unknown config key 'method.options.backbon'; did you mean 'method.options.backbone'?",
        ),
        ("train.epochs=many", "train.epochs: expected an integer, got 'many'"),
        ("optim.betas=[0.9]", "optim.betas: expected 2 values, got 1: [0.9]"),
        ("optim.name=sgdd", "optim.name must be one of ['lars', 'adamw', 'sgd'], got 'sgdd'"),
        ("train.epochs.x=1", "train.epochs is a value, not a section (got keys x)"),
        ("data.batch_size", "override 'data.batch_size' is not of the form key.sub=value"),
    ],
)
def test_bad_keys_and_values_give_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value) == message
    assert "\n" not in str(e.value)


def test_unknown_key_in_a_preset_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  warmup_epoch: 3\n")
    with pytest.raises(ConfigError, match=r"^unknown config key 'optim.warmup_epoch'; did you mean 'optim.warmup_epochs'\?$"):
        load_config(path)


def test_cli_prints_the_error_in_one_line_and_exits_2():
    done = run_in_repo([PYTHON, "-m", "train", "--config", "/dev/null", "log.every_step=5"], timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "config error: unknown config key 'log.every_step'; did you mean 'log.every_steps'?"
    ]


def test_overrides_are_read_as_yaml():
    assert parse_override("optim.base_lr=1e-3") == (["optim", "base_lr"], 1e-3)
    assert parse_override("optim.min_lr=null") == (["optim", "min_lr"], None)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    cfg = load_config(
        None,
        [
            "optim.base_lr=2",
            "optim.betas=[0.9, 0.95]",
            "train.deterministic=true",
            "data.num_local=null",
            "method.options.backbone=resnet18",
            "output_dir=runs/x",
            "data.samples_per_epoch=128",
        ],
    )
    assert cfg.optim.base_lr == 2.0 and isinstance(cfg.optim.base_lr, float)  # int accepted for a float
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.train.deterministic is True and cfg.data.num_local is None
    assert cfg.method.options == {"backbone": "resnet18"} and cfg.output_dir == "runs/x"


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(
        None,
        [
            "optim.name=adamw",
            "optim.weight_decay_end=0.4",
            "data.global_size=64",
            "data.samples_per_epoch=128",
            "data.augment.blur_p=[1.0, 0.1, 0.5]",
        ],
    )
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["optim"]["weight_decay_end"] == 0.4


@pytest.mark.parametrize("preset", ["default.yaml", "clove_r50_imagenet.yaml"])
def test_presets_load(preset):
    cfg = load_config(CONFIGS / preset)
    assert isinstance(cfg, Config)
    assert config_to_dict(load_config(CONFIGS / preset)) == config_to_dict(cfg)


def test_paper_preset_matches_methods_md():
    cfg = load_config(CONFIGS / "clove_r50_imagenet.yaml")
    o = cfg.optim
    assert (o.name, o.base_lr, o.momentum, o.trust_coefficient, o.weight_decay) == ("lars", 1.0, 0.9, 1e-3, 2e-5)
    assert (o.warmup_epochs, o.min_lr_ratio, o.min_lr) == (5, 0.01, None)
    d = cfg.data
    assert (d.recipe, d.global_size, d.local_size, d.num_local) == ("clove", 224, 96, 6)
    assert cfg.method.options.get("backbone", "resnet50") == "resnet50"
    assert cfg.train.mixed_precision in ("bf16", "fp16") and cfg.train.epochs in (200, 400)


def test_default_preset_is_a_small_cpu_run():
    cfg = load_config(CONFIGS / "default.yaml")
    assert cfg.method.options["backbone"] == "resnet18"
    assert cfg.data.shards == "data/shards/photos" and cfg.data.backend == "cpu"
    assert cfg.data.global_size <= 128 and cfg.data.num_workers <= 2
    assert Path(cfg.output_dir).parts[0] == "runs"
