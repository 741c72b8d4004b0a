"""``_info.json``: the dataset description timm's WebDataset reader needs, written beside the shards.

``timm.data.create_dataset("wds/NAME", root=OUT, split="train")`` looks for ``OUT/_info.json`` and
stops with "split train not found" without it. Per split it wants ``name``, ``num_samples``,
``filenames`` (relative to OUT) and ``shard_lengths``; timm then reads our samples as they are
(``.jpg``/``.png``/``.webp`` images, ``.cls`` labels). The file is derived from the manifest alone,
so a rerun of a finished conversion can restore it.
"""

from __future__ import annotations

INFO = "_info.json"


def timm_info(manifest: dict) -> dict:
    """The ``_info.json`` content of a finished conversion's manifest (deterministic)."""
    info: dict = {"name": manifest["kind"]}
    if manifest.get("classes") is not None:
        info["num_classes"] = len(manifest["classes"])
    info["splits"] = {
        split: {
            "name": split,
            "num_samples": s["count"],
            "filenames": [e["name"] for e in s["shards"]],
            "shard_lengths": [e["count"] for e in s["shards"]],
        }
        for split, s in manifest["splits"].items()
    }
    return info
