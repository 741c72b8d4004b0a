"""train.compile: the loop asks the method for its compile_step(), once, before training."""

from __future__ import annotations

import pytest

from model.registry import METHODS
from tests.train.helpers import patch_method, tiny_overrides
from train.config import load_config
from train.loop import Run


def test_compile_calls_the_methods_compile_step_once(photo_shards, tmp_path, monkeypatch):
    calls = []
    build = METHODS["clove"]

    def traced(options):
        method = build(options)
        method.compile_step = lambda: calls.append("compile")
        return method

    patch_method(monkeypatch, "clove", traced)
    Run(load_config(None, tiny_overrides(photo_shards, tmp_path / "run", {"train.compile": True})))
    assert calls == ["compile"]
    Run(load_config(None, tiny_overrides(photo_shards, tmp_path / "run2")))
    assert calls == ["compile"]  # off by default


def test_compile_refused_for_a_method_without_compile_step(photo_shards, tmp_path, monkeypatch):
    build = METHODS["byol"]
    patch_method(
        monkeypatch, "clove", lambda options: build({"backbone": "resnet18", "proj_hidden": 16, "proj_dim": 8, "pred_hidden": 16})
    )
    with pytest.raises(ValueError, match="train.compile"):
        Run(load_config(None, tiny_overrides(photo_shards, tmp_path / "run", {"train.compile": True})))
