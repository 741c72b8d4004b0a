# densessl — the commands a newcomer runs. `make help` lists them.
PY := .venv/bin/python
DATA ?= data

.PHONY: help setup demo test test-all bench clean results-resnet results-vit results-vit-ablation

help:
	@echo "make setup     create .venv, install densessl + real photos (no GPU needed)"
	@echo "make demo      setup, build shards from the bundled real photos, run the default job"
	@echo "make test      setup, then ruff (lint + format check) and the fast test suite (what CI runs)"
	@echo "make test-all  also the slow tests"
	@echo "make results-resnet  the ResNet learning table end to end (CLoVE vs BYOL vs random; about 2.5 h on 2 cores)"
	@echo "make results-vit     the ViT learning table end to end (GTSA vs DINO vs random; about 2 h per seed on 2 cores)"
	@echo "make results-vit-ablation  which budget change moves GTSA: one setting back to the tiny preset per arm, 300 steps (about 1.5 h)"

setup: .venv/.installed

.venv/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

demo: setup
	bash scripts/demo.sh

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m "not gpu"

results-resnet: setup
	bash scripts/results.sh resnet

results-vit: setup
	bash scripts/results.sh vit

results-vit-ablation: setup
	bash scripts/ablate_vit.sh

clean:
	rm -rf $(DATA) runs
