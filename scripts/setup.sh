#!/usr/bin/env bash
# One-command setup on a fresh machine: real photos (Debian packages), a virtual environment with
# the pinned PyTorch build, and densessl in editable mode with its [dev] and [dali] extras.
# Environment: PYTHON (interpreter, default python3), VENV (default .venv), NO_DALI=1 to skip DALI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
PHOTO_PKGS="opencv-doc mate-backgrounds tuxpaint-stamps-default tuxpaint-data"

missing=""
for p in $PHOTO_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing real-photo packages:$missing"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null) \
      || echo "setup: apt-get failed for$missing; tests that need those photos will skip"
  else
    echo "setup: not root or no apt-get; skipping photo packages$missing (tests that need them skip)"
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Pinned builds for this project's machines (served locally there); elsewhere pip resolves
# pyproject's loose ranges. Override with TORCH_SPEC="torch==X torchvision==Y".
case "$(uname -m)" in
  x86_64) default_torch="torch==2.14.1 torchvision==0.29.1" ;;
  aarch64) default_torch="torch==2.9.1 torchvision==0.24.1" ;;
  *) default_torch="" ;;
esac
TORCH_SPEC=${TORCH_SPEC:-$default_torch}
if [ -n "$TORCH_SPEC" ]; then "$VENV/bin/python" -m pip install -q $TORCH_SPEC; fi
extras="dev"
[ "${NO_DALI:-0}" = 1 ] || extras="dev,dali"
"$VENV/bin/python" -m pip install -q -e ".[$extras]"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
