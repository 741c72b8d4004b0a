#!/usr/bin/env bash
# One command that measures every GPU figure (issue #14): `bash scripts/gpu_check.sh --help`.
# Uses .venv/bin/python when there is one (this project's machines), else python3 (a GPU image's
# PyTorch interpreter); PYTHON=... overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/gpu_check.py "$@"
