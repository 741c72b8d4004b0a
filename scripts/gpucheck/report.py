"""Derived figures (the goals of issue #14) and the Markdown the README's "Measured" section takes."""

from __future__ import annotations

from gpucheck.figures import figure, share

GOAL_DALI_RATE = 10_000  # images/s, DALI, CLoVE recipe with M, batch 256
GOAL_LOADER_OVER_STEP = 2.0  # DALI images/s over the CLoVE R50 bf16 step's
GOAL_TORCH_VS_DALI = 0.8  # torch backend within 20 % of DALI
GOAL_M_SHARE = 0.01  # M + inverse maps under 1 % of a training step
GOAL_DATA_WAIT = 0.05  # under 5 % of step time waiting for data


def _values(records: list[dict]) -> dict[str, dict]:
    return {r["figure"]: r for r in records if r.get("status") == "ok" and "value" in r}


def _goal(name: str, text: str, value: float | None, target: float, at_least: bool, unit: str, **details) -> dict:
    if value is None:
        return {
            **figure(name, None, unit, **details),
            "goal": text,
            "target": target,
            "met": None,
            "status": "skipped",
            "reason": "a figure it needs was not measured",
        }
    met = value >= target if at_least else value < target
    return {**figure(name, value, unit, **details), "goal": text, "target": target, "met": met, "status": "ok"}


def derived(records: list[dict]) -> list[dict]:
    """The M share of a training step and the goals, from the measured figures."""
    v = _values(records)

    def val(k: str):
        return v[k]["value"] if k in v else None

    out: list[dict] = []
    train = next((b for b in ("torch", "dali") if f"train.{b}.step_ms" in v), None)
    m_share = None
    if train and val("geometry.clove") is not None:
        rec = share(
            f"train.{train}.m_share",
            val("geometry.clove"),
            val(f"train.{train}.step_ms"),
            how="geometry.clove ms / train step ms (batch images / images/s)",
        )
        rec.update(status="ok", what=f"M + inverse maps, share of a training step (`{train}` run)")
        out.append(rec)
        m_share = rec["value"]
    dali, torch_rate, step = val("bench.dali.clove.m"), val("bench.torch.clove.m"), val("model.clove_r50")
    out += [
        _goal(
            "goal.dali_rate",
            "DALI, 2×224 + 6×96 with matrices and M, batch 256: ≥ 10,000 images/s",
            dali,
            GOAL_DALI_RATE,
            True,
            "images/s",
        ),
        _goal(
            "goal.dali_over_step",
            "DALI ≥ 2× the CLoVE R50 bf16 step's images/s",
            round(dali / step, 3) if dali and step else None,
            GOAL_LOADER_OVER_STEP,
            True,
            "x",
        ),
        _goal(
            "goal.torch_vs_dali",
            "torch backend within 20 % of DALI (same recipe)",
            round(torch_rate / dali, 3) if dali and torch_rate else None,
            GOAL_TORCH_VS_DALI,
            True,
            "x",
        ),
        _goal(
            "goal.m_share",
            "M and the inverse maps: < 1 % of a training step",
            m_share,
            GOAL_M_SHARE,
            False,
            "fraction of step time",
        ),
    ]
    for b in ("torch", "dali"):
        out.append(
            _goal(
                f"goal.data_wait.{b}",
                f"training, `{b}` backend: < 5 % of step time waiting for data",
                val(f"train.{b}.data_wait"),
                GOAL_DATA_WAIT,
                False,
                "fraction of step time",
            )
        )
    return out


def fmt(value: float | None, unit: str) -> str:
    """``12345.6, images/s`` -> ``12,346 images/s``; fractions as percent; ratios with ×."""
    if value is None:
        return "-"
    if unit == "images/s":
        return f"{value:,.0f} images/s" if value >= 100 else f"{value:.3g} images/s"
    if unit.startswith("fraction"):
        return f"{100 * value:.2f} %"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "ms":
        return f"{value:.3g} ms"
    return f"{value:g} {unit}"


def _where(r: dict) -> str:
    if r.get("mode") == "dry-run":
        return "dry run: this CPU machine, tiny sizes"
    return f"one {r.get('gpu', 'GPU?')}, {r.get('cpus')} cores, torch {r.get('torch')}"


def _step_text(name: str, recs: list[dict]) -> str:
    """The figure column of one step's row (``name``: the step)."""
    by = {r["figure"]: r for r in recs}
    first = recs[0]
    kind = name.split(".")[0]
    if first.get("status") != "ok":
        return f"not measured: {first['status']} ({first.get('reason', '')})"
    if kind == "pytest":
        d = first["details"]
        text = ", ".join(f"{d[k]} {k}" for k in ("passed", "failed", "errors", "skipped") if d.get(k) or k == "failed")
        return text if d.get("passed") or d.get("skipped") or d.get("failed") or d.get("errors") else "no test ran"
    if kind == "train":
        ips, wait = by.get(f"{name}.images_per_s"), by.get(f"{name}.data_wait")
        text = f"{fmt(ips['value'], 'images/s')}, {fmt(wait['value'], 'fraction')} of step time waiting for data"
        m = by.get(f"{name}.m_share")
        return text + (f", {fmt(m['value'], 'fraction')} on M" if m else "")
    if kind == "geometry":
        d = first["details"]
        return f"{fmt(first['value'], 'ms')} per step ({d.get('pairs')} pairs, batch {d.get('batch_size')})"
    if kind == "model":
        return f"{fmt(first['value'], 'images/s')} ({first['details'].get('ms_per_step')} ms/step)"
    text = fmt(by[name]["value"], "images/s")
    if f"{name}.reference" in by:
        mine, ref = (fmt(by[k]["value"], "images/s").split()[0] for k in (name, name + ".reference"))
        text = f"{mine} vs {ref} images/s: {by[name + '.vs_reference']['value']:.2f}×"
    return text


def table(records: list[dict]) -> str:
    """The README "Measured" rows (``| what | command (above) | figure |``), one per step, then the goals."""
    steps: dict[str, list[dict]] = {}
    for r in records:
        if r["figure"].startswith(("goal.", "setup.")) or r.get("reason") == "not in --only":
            continue  # goals: their own table; setup: not a figure; steps left out on purpose: no row
        key = r["figure"].split(".vs_reference")[0].split(".reference")[0]
        for suffix in (".images_per_s", ".data_wait", ".step_ms", ".m_share"):
            key = key.removesuffix(suffix)
        steps.setdefault(key, []).append(r)
    lines = ["| what | command (above) | figure |", "|---|---|---|"]
    for key, recs in steps.items():
        what = next((r["what"] for r in recs if r.get("what")), recs[0]["figure"])
        cmd = next((r["command"] for r in recs if r.get("command")), "")
        lines.append(f"| {what} | {cmd} | {_step_text(key, recs)} ({_where(recs[0])}) |")
    goals = [r for r in records if r["figure"].startswith("goal.")]
    if goals:
        dry = " (dry run: CPU, tiny sizes, not comparable)" if goals[0].get("mode") == "dry-run" else ""
        lines += ["", f"| goal (issue #14){dry} | measured | met |", "|---|---|---|"]
        for g in goals:
            met = {True: "yes", False: "**no**", None: "not measured"}[g["met"]]
            lines.append(f"| {g['goal']} | {fmt(g['value'], g['unit'])} | {met} |")
    return "\n".join(lines) + "\n"
