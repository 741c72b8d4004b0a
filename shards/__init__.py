"""Dataset -> WebDataset shards: ``python -m shards {imagenet,coco,folder,photos,verify,bench}``.

Modules, one concept each: ``probe`` (what a file really is, keep or skip), ``plan`` (samples to
shards, deterministic from the seed), ``writer`` (one reproducible tar, atomic), ``index`` (DALI
index files), ``manifest``, ``parallel`` (worker processes + progress), ``convert`` (the resumable
driver), the sources ``imagenet``/``coco``/``folder``, ``verify`` and ``bench``. Nothing here
imports torch: converting needs no GPU and no DALI.
"""
