"""Build RUN_DIR/report/report.md and report.html (with PNG plots beside them) from a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmdistill.report.document import Block, Code, Heading, Image, Paragraph, Table, render_html, render_markdown
from lmdistill.files import write_atomically
from lmdistill.report.plots import metric_keys, plot_eval_metrics, plot_losses, plot_model_comparison
from lmdistill.report.run_dir import RunRecord, is_number, load_run

MODEL_ORDER = ("teacher", "student", "baseline")
LABELS = {
    "parameters": "Parameters",
    "size_on_disk_bytes": "Size on disk (bytes)",
    "latency_ms_per_example": "Latency (ms / example)",
    "tokens_per_second": "Tokens per second (forward)",
    "decode_tokens_per_second": "Tokens per second (greedy decoding)",
    "perplexity": "Perplexity",
    "top1_agreement": "Top-1 agreement with teacher",
    "mean_token_kl": "Mean token KL(teacher ‖ model)",
}
MAX_EVAL_TABLE_ROWS = 20
PLOT_FILES = ("loss.png", "eval_metrics.png", "model_comparison.png")


def format_value(value: Any) -> str:
    """Integers with thousands separators; floats with 4 decimals, 1 above 1000, 3-digit exponent below 0.01."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not is_number(value):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    if value and abs(value) < 0.01:
        return f"{value:.3e}"  # learning rates and tiny KLs would all print as 0.0000
    return f"{value:.4f}"


def _ratio(numerator: Any, denominator: Any) -> str | None:
    if is_number(numerator) and is_number(denominator) and denominator:
        return f"{numerator / denominator:.2f}×"
    return None


def comparison_table(models: dict[str, dict[str, Any]]) -> Table:
    """Rows are metrics, columns are models (teacher, student, baseline first); speed-up and compression vs teacher."""
    names = [n for n in MODEL_ORDER if n in models] + [n for n in models if n not in MODEL_ORDER]
    teacher = models.get("teacher", {})
    rows: list[list[str]] = []

    def add(label: str, cells: list[str | None]) -> None:
        if any(cell is not None for cell in cells):
            rows.append([label] + [cell if cell is not None else "—" for cell in cells])

    def add_key(key: str) -> None:
        add(LABELS.get(key, key), [format_value(models[n][key]) if key in models[n] else None for n in names])

    add_key("parameters")
    add("Compression vs teacher", [_ratio(teacher.get("parameters"), models[n].get("parameters")) for n in names])
    add_key("size_on_disk_bytes")
    add_key("latency_ms_per_example")
    add_key("tokens_per_second")
    add_key("decode_tokens_per_second")
    add("Decoding speed-up vs teacher", [_ratio(models[n].get("decode_tokens_per_second"), teacher.get("decode_tokens_per_second"))
                                         for n in names])
    speed_ups = []
    for n in names:
        by_latency = _ratio(teacher.get("latency_ms_per_example"), models[n].get("latency_ms_per_example"))
        speed_ups.append(by_latency or _ratio(models[n].get("tokens_per_second"), teacher.get("tokens_per_second")))
    add("Forward speed-up vs teacher", speed_ups)
    known = set(LABELS)
    for key in ("perplexity", "top1_agreement", "mean_token_kl"):
        add_key(key)
    task_keys = sorted({k for n in names for k in models[n] if k not in known})
    for key in task_keys:
        add_key(key)
    return Table(["metric"] + names, rows)


def _training_blocks(run: RunRecord, report_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Training")]
    if not run.train_rows:
        return blocks + [Paragraph("No training lines in metrics.jsonl; training table and loss plot skipped.")]
    last = run.train_rows[-1]
    summary = f"{len(run.train_rows)} training log lines, steps {run.train_rows[0]['step']} to {last['step']}."
    if is_number(last.get("elapsed_s")):
        summary += f" Elapsed: {format_value(last['elapsed_s'])} s."
    blocks.append(Paragraph(summary))
    values = [[key, format_value(value)] for key, value in last.items() if key not in ("step", "split")]
    blocks.append(Table(["metric", f"value at step {last['step']}"], values))
    loss_plot = plot_losses(run.train_rows, report_dir / "loss.png")
    if loss_plot is None:
        blocks.append(Paragraph("No loss values in the training lines; loss plot skipped."))
    else:
        blocks.append(Image(loss_plot, "Training loss per term over steps"))
    return blocks


def _evaluation_blocks(run: RunRecord, report_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Evaluation during training")]
    keys = metric_keys(run.eval_rows, "eval/")
    if not keys:
        return blocks + [Paragraph("No evaluation lines in metrics.jsonl; evaluation table and plot skipped.")]
    shown = run.eval_rows[-MAX_EVAL_TABLE_ROWS:]
    if len(shown) < len(run.eval_rows):
        blocks.append(Paragraph(f"Last {len(shown)} of {len(run.eval_rows)} evaluations."))
    rows = [[format_value(row["step"])] + [format_value(row.get(key)) for key in keys] for row in shown]
    blocks.append(Table(["step"] + [key.removeprefix("eval/") for key in keys], rows))
    eval_plot = plot_eval_metrics(run.eval_rows, report_dir / "eval_metrics.png")
    if eval_plot is not None:
        blocks.append(Image(eval_plot, "Evaluation metrics over steps"))
    return blocks


def _sample_blocks(run: RunRecord) -> list[Block]:
    """Held-out prompts with every model's greedy answer, one table per prompt."""
    if not run.samples:
        return []
    blocks: list[Block] = [Heading("Answers side by side"),
                           Paragraph("Greedy answers to held-out prompts; `reference` is the held-out answer the models are scored on.")]
    for number, sample in enumerate(run.samples, start=1):
        rows = [[name, str(text)] for name, text in sample.items() if name != "prompt"]
        blocks.append(Paragraph(f"Prompt {number}: {str(sample.get('prompt', '')).strip()}"))
        blocks.append(Table(["model", "answer"], rows, numeric=False))
    return blocks


def _pruning_blocks(run: RunRecord) -> list[Block]:
    if not run.pruning.get("kept_layers") and not run.pruning.get("width"):
        return []
    blocks: list[Block] = [Heading("Pruning")]
    if run.pruning.get("kept_layers"):
        scores = run.pruning.get("layer_scores", [])
        blocks.append(Paragraph(f"Kept layers {run.pruning['kept_layers']} of {len(scores)} by {run.pruning.get('layer_score')} "
                                f"on {run.pruning.get('calibration_examples')} calibration examples."))
        blocks.append(Table(["layer", "score", "kept"], [[str(i), f"{value:.4g}", "yes" if i in run.pruning["kept_layers"] else ""]
                                                        for i, value in enumerate(scores)]))
    for key, (before, after) in run.pruning.get("width", {}).items():
        blocks.append(Paragraph(f"{key}: {before} -> {after}"))
    return blocks


def _comparison_blocks(run: RunRecord, report_dir: Path) -> list[Block]:
    blocks: list[Block] = [Heading("Teacher vs student")]
    if not run.models:
        return blocks + [Paragraph("No evaluation.json (or no models in it); model comparison skipped.")]
    blocks.append(comparison_table(run.models))
    comparison_plot = plot_model_comparison(run.models, report_dir / "model_comparison.png")
    if comparison_plot is not None:
        blocks.append(Image(comparison_plot, "Size, speed and quality per model"))
    return blocks


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``RUN_DIR/report/report.md`` and ``report.html`` plus PNG plots; returns (markdown_path, html_path).

    Raises UserError when ``run_dir`` or its ``metrics.jsonl`` is missing or malformed; other missing pieces
    (eval lines, evaluation.json, config.yaml) are skipped with a line in the report saying so.
    """
    run = load_run(run_dir)
    report_dir = run.run_dir / "report"
    report_dir.mkdir(exist_ok=True)
    for name in PLOT_FILES:
        # a plot left from an earlier build would contradict this report if its data has since gone
        (report_dir / name).unlink(missing_ok=True)
    title = f"Run report: {run.run_dir.resolve().name}"
    blocks: list[Block] = [Heading(title, level=1)]
    blocks += [Paragraph(note) for note in run.notes]
    blocks += _comparison_blocks(run, report_dir)
    blocks += _sample_blocks(run)
    blocks += _pruning_blocks(run)
    blocks += _training_blocks(run, report_dir)
    blocks += _evaluation_blocks(run, report_dir)
    blocks.append(Heading("Configuration"))
    if run.config_text is None:
        blocks.append(Paragraph("No config.yaml in the run directory."))
    else:
        blocks.append(Code(run.config_text, "yaml"))
    markdown_path = write_atomically(report_dir / "report.md", render_markdown(blocks))
    html_path = write_atomically(report_dir / "report.html", render_html(blocks, title))
    return markdown_path, html_path
