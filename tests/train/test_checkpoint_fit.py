"""Checkpoints that load but do not fit end in one line naming the mismatch (issue 20, item 4).

Before: wrong shapes, another method or architecture, a missing key or a missing config ended in
18-45 line tracebacks in ``train --resume`` and ``python -m evaluation``, and ``--resume auto`` did not
fall back past such a checkpoint; an export whose ``backbone.json`` disagreed with its weights
ended in a multi-line ``load_state_dict`` error."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from evaluation.models import features_from_checkpoint, load_exported_checked
from model.registry import METHODS
from tests.train.helpers import tiny_overrides
from train.checkpoint import list_checkpoints
from train.config import config_to_dict, load_config
from train.loop import Run, train

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # tests/train/conftest.py


def _resume_error(cfg, resume) -> str:
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    with pytest.raises(ValueError) as e:
        Run(cfg).resume(resume)
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


def test_resume_names_the_mismatch_and_auto_falls_back(photo_shards, tmp_path, caplog):
    out = tmp_path / "run"
    extra = {"train.epochs": 1, "train.max_steps": 2, "checkpoint.keep_last": 5, "checkpoint.export": False}
    cfg = load_config(None, tiny_overrides(photo_shards, out, extra))
    train(cfg)
    good = list_checkpoints(out / "checkpoints")[-1]
    state = torch.load(good, weights_only=True)

    other = load_config(None, tiny_overrides(photo_shards, out, {**extra, "method.options.backbone": "resnet34"}))
    assert "checkpoint is clove/resnet18, config is clove/resnet34" in _resume_error(other, str(good))
    gtsa = load_config("configs/gtsa_tiny.yaml", tiny_overrides(photo_shards, out, {**extra, "method.name": "gtsa"})[:2])
    message = _resume_error(gtsa, str(good))
    assert "checkpoint is clove/resnet18, config is gtsa/" in message

    cases = {
        "missing": lambda s: s["model"].pop(next(iter(s["model"]))),
        "shape": lambda s: s["model"].__setitem__(next(iter(s["model"])), torch.zeros(3, 3)),
        "noconfig": lambda s: s.pop("config"),
        "nokey": lambda s: s.pop("ranks"),
    }
    words = {"missing": "1 missing", "shape": "of another shape", "noconfig": "'config'", "nokey": "'ranks'"}
    for i, (name, tamper) in enumerate(cases.items()):
        bad = {**state, "model": dict(state["model"])}
        tamper(bad)
        path = out / "checkpoints" / f"ckpt-{10 + i:08d}.pt"
        torch.save(bad, path)
        assert words[name] in _resume_error(cfg, str(path)), name
    # --resume auto: every newer checkpoint misfits, so it falls back to the good one
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    run = Run(cfg)
    with caplog.at_level("WARNING", logger="train.checkpoint"):
        run.resume("auto")
    assert run.resumed_from == good and "skipping checkpoint" in caplog.text


def _checkpoint_state(backbone: str = "resnet18") -> dict:
    cfg = load_config(None, ["data.samples_per_epoch=128", f"method.options.backbone={backbone}"])
    method = METHODS["clove"](dict(cfg.method.options))
    return {"model": method.state_dict(), "config": config_to_dict(cfg), "step": 3}


def test_evaluation_names_the_mismatch(tmp_path):
    state = _checkpoint_state()
    key = "student.backbone.conv1.weight" if "student.backbone.conv1.weight" in state["model"] else next(iter(state["model"]))
    cases = {
        "noconfig": ({k: v for k, v in state.items() if k != "config"}, "no config"),
        "shape": ({**state, "model": {**state["model"], key: torch.zeros(2, 2)}}, "of another shape"),
        "arch": ({**state, "model": _checkpoint_state("resnet34")["model"]}, "do not fit clove/resnet18"),
    }
    for name, (bad, words) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(bad, path)
        with pytest.raises(ValueError) as e:
            features_from_checkpoint(path)
        assert "\n" not in str(e.value) and words in str(e.value) and str(path) in str(e.value), name


def test_an_export_whose_backbone_json_disagrees_with_its_weights(tmp_path):
    method = METHODS["clove"]({"backbone": "resnet18", "proj_hidden": 64, "proj_dim": 32})
    exported = method.export(tmp_path / "exp")
    directory = next(iter(exported.values()))
    directory = directory if directory.is_dir() else directory.parent
    assert load_exported_checked(directory).info["arch"] == "resnet18"
    meta_path = directory / "backbone.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "arch": "resnet34"}))
    with pytest.raises(ValueError) as e:
        load_exported_checked(directory)
    assert "\n" not in str(e.value) and "resnet34" in str(e.value) and "do not fit" in str(e.value)
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "weights"}))
    with pytest.raises(ValueError, match="weights"):
        load_exported_checked(directory)
