"""``scripts/`` holds command-line tools, not a package: make its ``gpucheck`` helpers importable."""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
