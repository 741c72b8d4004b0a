#!/usr/bin/env bash
# The default job: shards from the bundled real photos (built once), a data-loader benchmark on
# them, then the tiny CPU pretraining run of configs/default.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
SHARDS=${SHARDS:-data/shards/photos}
# built once; rebuilt when it predates the photo pools or content hashes (it held every photo then)
current() {
  $PY -c "import json, sys; m = json.load(open('$SHARDS/manifest.json'))
sys.exit(not (m['source'].get('pool') == 'pretrain' and 'content_hashes' in m))" 2>/dev/null
}
if ! current; then
  $PY -m shards photos "$SHARDS" --overwrite
fi
$PY -m shards verify "$SHARDS"
$PY -m pipeline.bench --shards "$SHARDS" --backend cpu --recipe clove --batch-size 16 --steps 20 --workers 2
$PY -m train --config configs/default.yaml "$@"
