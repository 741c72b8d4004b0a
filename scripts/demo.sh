#!/usr/bin/env bash
# The default job: shards from the bundled real photos (built once), a data-loader benchmark on
# them, then the tiny CPU pretraining run of configs/default.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SHARDS=${SHARDS:-data/shards/photos}
# built once; rerun (it only restores what is missing) for shards built before _info.json existed
if [ ! -f "$SHARDS/manifest.json" ] || [ ! -f "$SHARDS/_info.json" ]; then
  $PY -m shards photos "$SHARDS"
fi
$PY -m shards verify "$SHARDS"
$PY -m pipeline.bench --shards "$SHARDS" --backend cpu --recipe clove --batch-size 16 --steps 20 --workers 2
$PY -m train --config configs/default.yaml "$@"
