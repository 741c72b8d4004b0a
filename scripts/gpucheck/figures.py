"""Read each entry point's output into figures: ``{"figure", "value", "unit", "details"}`` dicts.

Every reader takes what the entry point wrote (a JSON-lines file or its captured stdout) and
raises ``ValueError`` with one line when the output does not hold the figure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path


def figure(name: str, value: float, unit: str, **details) -> dict:
    """One figure record (details: anything that says how it was measured)."""
    return {"figure": name, "value": value, "unit": unit, "details": details}


def read_jsonl(path: Path) -> list[dict]:
    """Every JSON object of a JSON-lines file (blank lines ignored)."""
    if not Path(path).is_file():
        raise ValueError(f"{path} was not written")
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def bench_figures(name: str, json_out: Path) -> list[dict]:
    """``pipeline.bench``: the backend run's images/s; with ``--vs reference`` also the reference's
    images/s and the ratio (figures ``NAME``, ``NAME.reference``, ``NAME.vs_reference``)."""
    rows = read_jsonl(json_out)
    if not rows:
        raise ValueError(f"{json_out} holds no run")
    main = rows[0]
    keep = (
        "backend",
        "label",
        "recipe",
        "batch_size",
        "steps",
        "warmup",
        "workers",
        "device",
        "decode",
        "with_m",
        "views_per_s",
        "mb_per_s",
        "cpu_cores_busy",
        "bad_samples",
        "gpu",
        "m_matches_per_batch",
    )
    out = [figure(name, main["images_per_s"], "images/s", **{k: main[k] for k in keep if k in main})]
    for r in rows[1:]:
        if r.get("label") == "reference":
            out.append(figure(f"{name}.reference", r["images_per_s"], "images/s", label="reference"))
            out.append(
                figure(
                    f"{name}.vs_reference",
                    round(main["images_per_s"] / r["images_per_s"], 3),
                    "x",
                    numerator=main.get("label"),
                    denominator="reference",
                )
            )
    return out


def model_bench_figures(name: str, stdout: str) -> list[dict]:
    """``model.bench``: images/s and ms/step of the first row under the ``images/s`` header."""
    lines = stdout.splitlines()
    for i, line in enumerate(lines):
        head = line.split()
        if "images/s" in head:
            col = head.index("images/s")
            for row in lines[i + 1 :]:
                cells = row.split()
                if len(cells) > col + 1 and re.fullmatch(r"[\d.]+", cells[col]):
                    details = {"variant": cells[0], "ms_per_step": float(cells[col + 1])}
                    setup = next((ln for ln in lines[:i] if "step:" in ln), "")
                    if setup:
                        details["setup"] = setup.strip()
                    return [figure(name, float(cells[col]), "images/s", **details)]
    raise ValueError("model.bench printed no images/s row")


def train_figures(name: str, log_jsonl: Path, batch_size: int) -> list[dict]:
    """``train``: images/s and the share of time waiting for data over the logged windows after the
    first (worker start-up and first-step compilation are left out, as the loop's own summary does).

    Figures ``NAME.images_per_s``, ``NAME.data_wait`` (a fraction), ``NAME.step_ms``."""
    windows = [r for r in read_jsonl(log_jsonl) if "images_per_s" in r and "data_wait" in r]
    if len(windows) < 2:
        raise ValueError(f"{log_jsonl} holds {len(windows)} logged window(s); need 2 (the first is start-up)")
    images = seconds = waiting = 0.0
    prev_step = windows[0]["step"]
    for w in windows[1:]:
        n = (w["step"] - prev_step) * batch_size
        t = n / w["images_per_s"]
        images, seconds, waiting = images + n, seconds + t, waiting + w["data_wait"] * t
        prev_step = w["step"]
    ips = images / seconds
    common = {
        "steps_measured": windows[-1]["step"] - windows[0]["step"],
        "last_step": windows[-1]["step"],
        "batch_size": batch_size,
        "loss_last": windows[-1].get("loss"),
    }
    return [
        figure(f"{name}.images_per_s", round(ips, 1), "images/s", **common),
        figure(
            f"{name}.data_wait",
            round(waiting / seconds, 4),
            "fraction of step time",
            **common,
            how="host time blocked in the loader's next(), as train/logging.py measures it",
        ),
        figure(f"{name}.step_ms", round(1e3 * batch_size / ips, 3), "ms", **common),
    ]


def geometry_figures(name: str, json_out: Path) -> list[dict]:
    """``geometry_share.py``: milliseconds of CLoVE's geometry per training step."""
    rows = read_jsonl(json_out)
    if not rows:
        raise ValueError(f"{json_out} holds no measurement")
    r = rows[-1]
    return [figure(name, r["geometry_ms"], "ms", **{k: v for k, v in r.items() if k != "geometry_ms"})]


def pytest_figures(name: str, junit_xml: Path) -> list[dict]:
    """``pytest --junitxml``: counts of the run; value = failed + errors (0 is the goal)."""
    import xml.etree.ElementTree as ET

    if not Path(junit_xml).is_file():
        raise ValueError(f"{junit_xml} was not written")
    root = ET.parse(junit_xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    details = {
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"],
        "errors": counts["errors"],
        "skipped": counts["skipped"],
    }
    return [figure(name, details["failed"] + details["errors"], "failed tests", **details)]


def share(name: str, part_ms: float, whole_ms: float, **details) -> dict:
    """A derived figure: ``part_ms / whole_ms`` as a fraction."""
    return figure(name, round(part_ms / whole_ms, 5), "fraction of step time", part_ms=part_ms, whole_ms=whole_ms, **details)
