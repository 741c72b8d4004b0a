"""``python -m evaluation``: the dense evaluation of frozen backbones (:mod:`evaluation.cli`)."""

import sys

from evaluation.evaluate import main

sys.exit(main())
