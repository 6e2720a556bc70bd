"""PNG plots for the run report, drawn with matplotlib's Agg canvas (no pyplot, no global state, no display).

Each function writes one PNG atomically and returns its path, or None when there is nothing to plot.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from lmdistill.files import temporary_beside
from lmdistill.report.run_dir import is_number

MODEL_COLOURS = {"teacher": "#4c72b0", "student": "#dd8452", "baseline": "#8c8c8c"}


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    handle, temporary = temporary_beside(path)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, format="png")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(row["step"], row[key]) for row in rows if is_number(row.get(key)) and math.isfinite(row[key])]
    return [p[0] for p in points], [p[1] for p in points]


def metric_keys(rows: list[dict[str, Any]], prefix: str) -> list[str]:
    """Keys equal to or starting with ``prefix`` that hold a number somewhere, in first-seen order."""
    keys: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if (key == prefix.rstrip("/") or key.startswith(prefix)) and is_number(value):
                keys.setdefault(key, None)
    return list(keys)


def plot_losses(train_rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Total loss and each ``loss/<term>`` over training steps, on one axis."""
    keys = metric_keys(train_rows, "loss/")
    if not keys:
        return None
    figure = _new_figure(7, 4)
    axes = figure.add_subplot()
    for key in keys:
        steps, values = _series(train_rows, key)
        axes.plot(steps, values, label=key, linewidth=2.2 if key == "loss" else 1.2)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("Training loss per term")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_eval_metrics(eval_rows: list[dict[str, Any]], path: Path) -> Path | None:
    """One small panel per ``eval/<metric>`` over steps (metrics differ in scale, so they do not share an axis)."""
    keys = metric_keys(eval_rows, "eval/")
    if not keys:
        return None
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = _new_figure(3.6 * columns, 2.8 * rows)
    for index, key in enumerate(keys):
        axes = figure.add_subplot(rows, columns, index + 1)
        steps, values = _series(eval_rows, key)
        axes.plot(steps, values, marker="o", markersize=3)
        axes.set_title(key.removeprefix("eval/"))
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    return _save(figure, path)


COMPARISON_PANELS = (
    ("parameters", "Parameters"),
    ("size_on_disk_bytes", "Size on disk (bytes)"),
    ("decode_tokens_per_second", "Decoding tokens per second (higher is faster)"),
    ("latency_ms_per_example", "Latency, ms per example"),
    ("perplexity", "Perplexity (lower is better)"),
    ("top1_agreement", "Top-1 agreement with teacher"),
)


LOG_SCALE_PANELS = ("perplexity",)


def plot_model_comparison(models: dict[str, dict[str, Any]], path: Path) -> Path | None:
    """Bars per model for size, speed and quality: one panel per metric that at least one model reports."""
    panels = [(key, title) for key, title in COMPARISON_PANELS if any(is_number(m.get(key)) for m in models.values())]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = _new_figure(3.6 * columns, 2.9 * rows)
    for index, (key, title) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        names = [name for name, metrics in models.items() if is_number(metrics.get(key))]
        values = [models[name][key] for name in names]
        axes.bar(names, values, color=[MODEL_COLOURS.get(name, "#55a868") for name in names])
        if key in LOG_SCALE_PANELS and all(value > 0 for value in values):
            axes.set_yscale("log")  # a student 40x worse than its teacher still shows both bars
            title += " (log scale)"
        axes.set_title(title, fontsize="medium")
        axes.grid(axis="y", alpha=0.3)
    return _save(figure, path)
