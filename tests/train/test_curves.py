"""train.curves: the plotted points are the logged ones, from logs written by the real RunLogger."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from pipeline.pictures.figure import pyplot
from train.curves import curves_figure, eval_series, main, panel_order, run_series
from train.logging import RunLogger, StepMeter


def write_run(out_dir, losses: list[float], every: int = 5) -> list[dict]:
    """A log.jsonl as a training run writes it (start event, one window per ``every`` steps, end event)."""
    acc = SimpleNamespace(is_main_process=True, num_processes=1, device=torch.device("cpu"))
    logger = RunLogger(acc, out_dir, total_steps=len(losses) * every, start_step=0, progress=False, use_trackers=False)
    logger.event(event="start", step=0)
    for w, loss in enumerate(losses):
        meter = StepMeter()
        for _ in range(every):
            meter.add_terms({"loss": torch.tensor(loss), "positive": torch.tensor(-loss / 100)})
            meter.micro_batches += 1
        step = (w + 1) * every
        logger.log(
            meter,
            step,
            epoch=w,
            scalars={"lr": 0.1 * (w + 1), "momentum": 0.99, "emb_std": 0.5},
            images_per_micro=16,
            bad_samples=0,
        )
    logger.event(event="end", step=len(losses) * every, seconds=1.0)
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_run_series_are_the_logged_step_records(tmp_path):
    records = write_run(tmp_path, [99.9, 99.5, 99.2])
    series = run_series(records)
    steps = [r for r in records if "event" not in r]
    assert series["loss"] == [(float(r["step"]), r["loss"]) for r in steps]
    assert [v for _, v in series["lr"]] == [r["lr"] for r in steps]
    assert "emb_std" in series and "data_wait" in series and "images_per_s" in series
    assert not {"step", "epoch", "time", "bad_samples", "event"} & set(series)


def test_a_resumed_step_keeps_its_last_record_and_odd_values_are_skipped():
    records = [
        {"step": 5, "loss": 3.0},
        {"step": 10, "loss": 2.0, "note": "x", "flag": True},
        {"event": "resume", "step": 5},
        {"step": 10, "loss": 1.5, "nan": float("nan")},
        {"loss": 7.0},
    ]
    series = run_series(records)
    assert series == {"loss": [(5.0, 3.0), (10.0, 1.5)]}


def test_eval_series_per_metric_and_model():
    records = [
        {"model": "a", "step": 20, "knn_top1": 0.3, "miou_layer4": 0.1},
        {"model": "a", "step": 10, "knn_top1": 0.2, "miou_layer4": 0.05},
        {"model": "b", "step": 10, "knn_top1": 0.25, "layer": "layer4"},
        {"model": "c", "knn_top1": 0.9},
    ]
    assert eval_series(records) == {
        "knn_top1": {"a": [(10.0, 0.2), (20.0, 0.3)], "b": [(10.0, 0.25)]},
        "miou_layer4": {"a": [(10.0, 0.05), (20.0, 0.1)]},
    }
    assert set(eval_series(records, ["miou_layer4"])) == {"miou_layer4"}


def test_panel_order():
    names = {"images_per_s", "lr", "negative", "loss", "matches", "emb_rank"}
    assert panel_order(names) == ["loss", "matches", "negative", "lr", "images_per_s", "emb_rank"]


def test_figure_plots_the_logged_values(tmp_path):
    plt = pyplot()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runs = {"a": run_series(write_run(tmp_path / "a", [5.0, 4.0, 3.0])), "b": run_series(write_run(tmp_path / "b", [6.0, 2.0]))}
    evals = eval_series([{"model": "a", "step": 15, "knn_top1": 0.4}])
    fig = curves_figure(runs, evals)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert list(panels)[0] == "loss" and "knn_top1 (evaluation)" in panels
    drawn = {line.get_label(): line.get_xydata().tolist() for line in panels["loss"].get_lines()}
    assert drawn == {"a": [[5, 5.0], [10, 4.0], [15, 3.0]], "b": [[5, 6.0], [10, 2.0]]}
    assert panels["knn_top1 (evaluation)"].get_lines()[0].get_xydata().tolist() == [[15, 0.4]]
    plt.close(fig)


def test_evaluated_models_keep_one_colour_and_one_legend():
    plt = pyplot()
    evals = eval_series(
        [
            {"model": "m1", "step": 10, "corr": 0.1, "fgbg": 0.4},
            {"model": "m2", "step": 10, "fgbg": 0.5},  # no corr: colours must not shift in that panel
        ]
    )
    fig = curves_figure({}, evals)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    colour = {ax_title: {ln.get_label(): ln.get_color() for ln in ax.get_lines()} for ax_title, ax in panels.items()}
    assert colour["corr (evaluation)"]["m1"] == colour["fgbg (evaluation)"]["m1"] != colour["fgbg (evaluation)"]["m2"]
    assert all(ax.get_legend() is None for ax in panels.values())  # no legend over the points
    (legend,) = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert [t.get_text() for t in legend.get_texts()] == ["m1", "m2"]
    assert [h.get_color() for h in legend.legend_handles] == [colour["fgbg (evaluation)"][m] for m in ("m1", "m2")]
    plt.close(fig)


def test_cli_writes_the_png(tmp_path, capsys):
    for name, losses in (("run1", [9.0, 8.0, 7.5]), ("run2", [9.0, 8.5])):
        (tmp_path / name).mkdir()
        write_run(tmp_path / name, losses)
    ev = tmp_path / "eval.jsonl"
    ev.write_text(json.dumps({"model": "run1", "step": 15, "corr_layer4": 0.5}) + "\n")
    out = tmp_path / "curves.png"
    assert main([str(tmp_path / "run1"), str(tmp_path / "run2" / "log.jsonl"), "--eval", str(ev), "--out", str(out)]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    assert out.stat().st_size > 10_000 and image.shape[0] > 300 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    assert main([str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main([str(tmp_path / "run1"), "--fields", "nothing-like-this", "--out", str(out)]) == 2
    assert "nothing to plot" in capsys.readouterr().err


def test_evaluate_lines_are_flattened_into_one_curve_per_run():
    from train.curves import eval_series

    lines = [
        {
            "model": "clove resnet18 step 100",
            "info": [{"method": "clove", "arch": "resnet18", "step": 100}],
            "figures": {"corr/layer3": 0.3, "miou/layer3": 0.05},
        },
        {
            "model": "clove resnet18 step 200",
            "info": {"method": "clove", "arch": "resnet18", "step": 200},
            "figures": {"corr/layer3": 0.4, "miou/layer3": 0.06},
        },
        {
            "model": "clove resnet18 step 200 [BN re-estimated]",
            "info": [{"method": "clove", "arch": "resnet18", "step": 200, "bn": "re-estimated on the train split (200 images)"}],
            "figures": {"corr/layer3": 0.45, "miou/layer3": 0.06},
        },
        {
            "model": "random resnet18 (torchvision init)",
            "info": {"arch": "resnet18", "init": "default"},
            "figures": {"corr/layer3": 0.33, "miou/layer3": 0.054},
        },
    ]
    series = eval_series(lines, metrics=["corr/layer3"])
    assert series == {
        "corr/layer3": {
            "clove resnet18": [(100.0, 0.3), (200.0, 0.4)],
            "clove resnet18 [BN re-estimated]": [(200.0, 0.45)],
            "random resnet18 (torchvision init)": [(0.0, 0.33)],
        }
    }
