"""``python -m train.evaluate``, the command's earlier name, kept so that scripts written for it still
run: the evaluation is the :mod:`evaluation` package (``python -m evaluation``)."""

import sys

from evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
