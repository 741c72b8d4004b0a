"""Dense evaluation of frozen backbones (``python -m evaluation``): what a model is measured on
(:mod:`evaluation.evaluate`), the data (``data``), the metrics (``segmentation``, ``knn``,
``correspondence``), the leakage check (``leakage``), the models a ``--checkpoint`` names
(``models``), the statistics (``stats``), the table (``report``) and the command line (``cli``).
It trains nothing; it reads what ``train`` and ``model`` export."""
