"""Pictures (PNG, matplotlib, Agg backend) of what the pipeline does; ``python -m pipeline.pictures --help``.

- :mod:`~pipeline.pictures.marks`: what is drawn, as pure functions of the view matrices;
- :mod:`~pipeline.pictures.batch_source`: one batch, photometric augmentation off;
- :mod:`~pipeline.pictures.draw_views`: matches of M, inverse coordinate maps, aligned grids;
- :mod:`~pipeline.pictures.throughput`: images/s from ``runs/bench.jsonl``.

matplotlib is imported only when a figure is drawn (``pip install 'densessl[plots]'``).
"""
