"""The member extensions a shard's sample may carry, the one list every reader uses.

WebDataset (and DALI) split a member name at its first dot: ``key.jpg`` holds the image, ``key.cls``
the class. The stream reader (:mod:`pipeline.source`) and the DALI backend read these; the
converters write ``jpg``/``png``/``webp`` and ``cls``. The converters' own list of candidate source
files (``shards.folder.IMAGE_SUFFIXES``) is wider on purpose: files in formats we do not keep are
probed, skipped and counted there.
"""

from __future__ import annotations

# image members in the order a reader picks one when a sample holds several
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "ppm", "pgm", "gif")
LABEL_EXTS = ("cls", "cls.txt", "label")
# DALI's decoders read every image format above but GIF
DALI_IMAGE_EXTS = tuple(e for e in IMAGE_EXTS if e != "gif")
