"""Compare a classification teacher with its students: dev accuracy, parameters, CPU latency, as a Markdown table."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from lmdistill.data.classification import collate_classification
from lmdistill.eval.classification import accuracy
from lmdistill.eval.footprint import measure_latency, model_footprint
from lmdistill.tasks.classification import predict_logits


def _load(model_dir: str | Path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(model_dir)


def dev_accuracy(model_dir: str | Path, examples: list[dict], pad_token_id: int, batch_size: int = 64) -> float:
    """Accuracy of the saved classifier in ``model_dir`` on tokenised ``examples`` (CPU)."""
    logits = predict_logits(_load(model_dir), examples, pad_token_id, batch_size, torch.device("cpu"))
    return accuracy(logits.argmax(-1), [example["label"] for example in examples])


def size_and_latency(model_dir: str | Path, examples: list[dict], pad_token_id: int, batch_size: int = 32) -> dict[str, float]:
    """``parameters`` and CPU ``latency_ms`` per example: median forward over the first ``batch_size`` examples
    padded to their longest (7 timed runs after 2 warm-up runs)."""
    model = _load(model_dir)
    batch = collate_classification(examples[:batch_size], pad_token_id)
    latency = measure_latency(model, batch["input_ids"], warmup=2, repeats=7)
    return {"parameters": model_footprint(model)["parameters"], "latency_ms": latency["latency_ms_per_example"]}


def comparison_table(results: list[dict], sizes: dict[str, dict], *, baseline: str = "label_only",
                     teacher_name: str = "teacher") -> str:
    """Markdown, one row per (method, layers): mean ± population std of accuracy over seeds, min–max, % of the
    teacher's accuracy and the gain in points over the ``baseline`` method at the same depth.

    ``results``: dicts with method, layers, seed, accuracy (one with method "teacher"); ``sizes``: "teacher" and
    "L<layers>" -> {parameters, latency_ms}.
    """
    teacher = next(r for r in results if r["method"] == "teacher")
    groups: dict[tuple[str, int], list[float]] = {}
    for r in results:
        if r["method"] != "teacher":
            groups.setdefault((r["method"], r["layers"]), []).append(r["accuracy"])
    lines = ["| model | layers | params | CPU ms/example | dev accuracy (mean ± std) | min–max | seeds | % of teacher | vs label-only |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| {teacher_name} | {teacher['layers']} | {sizes['teacher']['parameters'] / 1e6:.2f}M | "
             f"{sizes['teacher']['latency_ms']:.2f} | {100 * teacher['accuracy']:.2f} | – | 1 | 100.0 | – |"]
    order = sorted(groups.items(), key=lambda item: (-item[0][1], item[0][0] != baseline, item[0][0]))
    for (method, layers), values in order:
        mean, std = statistics.mean(values), statistics.pstdev(values)
        reference = groups.get((baseline, layers))
        gain = "–" if method == baseline or not reference else f"{100 * (mean - statistics.mean(reference)):+.2f}"
        size = sizes[f"L{layers}"]
        lines.append(f"| {method} | {layers} | {size['parameters'] / 1e6:.2f}M | {size['latency_ms']:.2f} | "
                     f"{100 * mean:.2f} ± {100 * std:.2f} | {100 * min(values):.2f}–{100 * max(values):.2f} | {len(values)} | "
                     f"{100 * mean / teacher['accuracy']:.1f} | {gain} |")
    return "\n".join(lines)
