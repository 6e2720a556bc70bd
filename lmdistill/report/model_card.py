"""The Hugging Face model card (``RUN_DIR/student/README.md``) of a distilled student, built with huggingface_hub.

Metadata: ``base_model`` (the teacher, or the model the student was loaded from), ``library_name: transformers``,
``pipeline_tag`` (the task's), ``tags`` (distillation, lmdistill), ``datasets`` (Hub ids among the training data) and
``model-index`` with the student's evaluated metrics (``evaluation.json`` and the last evaluation during training).
Body: teacher, student shape, how it was made (pruning, objective terms, data, steps, tokens), the evaluation table
against the teacher and the baseline, and the command and lmdistill version that made it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from lmdistill.files import write_atomically
from lmdistill.report.build import comparison_table, format_value
from lmdistill.report.document import Block, Code, Heading, Paragraph, Table, render_markdown
from lmdistill.report.run_dir import RunRecord, is_number, load_run

CARD_FILE = "README.md"
TAGS = ["distillation", "knowledge-distillation", "lmdistill"]
# Size and speed describe the model, not a score on data: they stay out of model-index.
NOT_SCORES = {"parameters", "size_on_disk_bytes", "latency_ms_per_example", "latency_ms_per_question",
              "tokens_per_second", "layers"}
TASK_TYPES = {"text-generation": "text-generation", "text-classification": "text-classification",
              "question-answering": "question-answering"}


FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".csv", ".tsv", ".parquet", ".gz", ".gguf")


def _hub_id(value: Any) -> str | None:
    """``value`` when it reads as a Hub repo id (``name`` or ``owner/name``), not a local path or a data file's name."""
    if not isinstance(value, str) or not value or Path(value).exists() or value.lower().endswith(FILE_SUFFIXES):
        return None
    if value.startswith((".", "/", "~")) or value.count("/") > 1 or "\\" in value:
        return None
    return value


def _sources(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]


def _teachers(config: dict[str, Any]) -> list[dict[str, Any]]:
    teacher = config.get("teacher")
    return [] if teacher is None else (teacher if isinstance(teacher, list) else [teacher])


def _describe_teacher(teacher: dict[str, Any]) -> str:
    if teacher.get("path"):
        return str(teacher["path"])
    if teacher.get("cache"):
        return f"a teacher-signal cache ({teacher['cache']})"
    return f"a randomly initialised {teacher.get('config', {}).get('model_type', 'model')} (from a config)"


def base_models(config: dict[str, Any]) -> list[str]:
    """The Hub ids the student derives from: the teachers', or the student's own origin when it was loaded."""
    student_path = _hub_id(config.get("student", {}).get("path"))
    if student_path:
        return [student_path]
    return [hub for hub in (_hub_id(t.get("path")) for t in _teachers(config)) if hub]


def _student_shape(student_dir: Path) -> dict[str, Any]:
    shape: dict[str, Any] = {}
    config_path = student_dir / "config.json"
    if config_path.is_file():
        model_config = json.loads(config_path.read_text(encoding="utf-8"))
        for key in ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                    "num_key_value_heads", "vocab_size"):
            if key in model_config:
                shape[key] = model_config[key]
    weights = student_dir / "model.safetensors"
    if weights.is_file():
        with safe_open(str(weights), framework="pt") as handle:
            total = 0
            for name in handle.keys():
                count = 1
                for size in handle.get_slice(name).get_shape():
                    count *= size
                total += count
        shape["parameters"] = total
    return shape


def _how_made(config: dict[str, Any], run: RunRecord) -> list[str]:
    student = config.get("student", {})
    lines = []
    if student.get("from_teacher"):
        rule = ", ".join(f"{k}={v}" for k, v in student["from_teacher"].items())
        lines.append(f"Student: depth-pruned from the teacher ({rule}), the kept layers' weights copied.")
    elif student.get("path"):
        kept = f", keeping layers {student['layers']}" if student.get("layers") else ""
        lines.append(f"Student: loaded from {student['path']}{kept}.")
    else:
        lines.append("Student: fresh random weights from a config.")
    if student.get("lora"):
        lines.append(f"Trained through LoRA adapters (r={student['lora'].get('r', 8)}), merged into the weights.")
    terms = []
    for term in config.get("objective", []):
        params = {k: v for k, v in term.items() if k not in ("name", "weight")}
        extra = f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else ""
        terms.append(f"{term.get('weight', 1.0)} × {term['name']}{extra}")
    if terms:
        lines.append("Objective: " + " + ".join(terms) + ".")
    data = config.get("data", {})
    if data:
        lines.append(f"Data: {', '.join(_sources(data.get('train')))} (format {data.get('format', 'text')}, "
                     f"max_length {data.get('max_length', 256)}).")
    if run.train_rows:
        last = run.train_rows[-1]
        tokens = f", {format_value(last['tokens'])} tokens" if is_number(last.get("tokens")) else ""
        lines.append(f"Training: {format_value(last['step'])} optimizer steps{tokens}.")
    return lines


def _dataset_of(config: dict[str, Any], evaluated_on: Any) -> tuple[str, str]:
    """(dataset_type, dataset_name) for model-index: a Hub id when it is one, else the file's name."""
    sources = _sources(evaluated_on) or _sources(config.get("data", {}).get("train"))
    source = sources[0] if sources else "unknown"
    return (_hub_id(source) or Path(source).name), source


def eval_results(config: dict[str, Any], run: RunRecord, pipeline_tag: str) -> list[EvalResult]:
    """The student's scores for model-index: ``evaluation.json``'s student entry (lm-eval scores named
    ``lm_eval/<task>/<metric>`` carry their own task as dataset) and the last evaluation during training."""
    task_type = TASK_TYPES.get(pipeline_tag, pipeline_tag)
    data = config.get("data", {})
    results = []
    student = (run.models or {}).get("student", {})
    dataset_type, dataset_name = _dataset_of(config, data.get("eval"))
    for key, value in student.items():
        if not is_number(value) or key in NOT_SCORES:
            continue
        if key.startswith("lm_eval/"):
            _, task_name, metric = key.split("/", 2)
            results.append(EvalResult(task_type=task_type, dataset_type=task_name, dataset_name=task_name,
                                      metric_type=metric, metric_value=value,
                                      metric_name=f"{metric} (lm-evaluation-harness)"))
        else:
            results.append(EvalResult(task_type=task_type, dataset_type=dataset_type, dataset_name=dataset_name,
                                      metric_type=key, metric_value=value))
    if run.eval_rows:
        last = run.eval_rows[-1]
        for key, value in last.items():
            if key.startswith("eval/") and is_number(value):
                results.append(EvalResult(task_type=task_type, dataset_type=dataset_type, dataset_name=dataset_name,
                                          dataset_split="held-out", metric_type=key.removeprefix("eval/"),
                                          metric_value=value, metric_name=f"{key} at step {last['step']}"))
    return results


def build_model_card(run_dir: str | Path) -> ModelCard:
    """The model card of the run in ``run_dir`` (which holds metrics.jsonl, config.yaml, run_info.json, student/)."""
    run = load_run(run_dir)
    config = yaml.safe_load(run.config_text) if run.config_text else {}
    config = config if isinstance(config, dict) else {}
    info_path = run.run_dir / "run_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    pipeline_tag = info.get("pipeline_tag", "text-generation")
    data = config.get("data", {})
    datasets = [hub for hub in (_hub_id(s) for s in _sources(data.get("train")) + _sources(data.get("eval"))) if hub]
    name = run.run_dir.resolve().name
    metadata = ModelCardData(
        base_model=base_models(config) or None, library_name="transformers", pipeline_tag=pipeline_tag, tags=TAGS,
        datasets=datasets or None, model_name=name, eval_results=eval_results(config, run, pipeline_tag) or None,
    )
    shape = _student_shape(run.run_dir / "student")
    blocks: list[Block] = [Heading(name, level=1), Paragraph(
        f"A student distilled with [lmdistill](https://pypi.org/project/lmdistill/) from "
        f"{' and '.join(_describe_teacher(t) for t in _teachers(config)) or 'labels alone (no teacher)'}.")]
    if shape:
        blocks += [Heading("Student"), Table(["property", "value"], [[k, format_value(v)] for k, v in shape.items()])]
    blocks += [Heading("How it was made")] + [Paragraph(line) for line in _how_made(config, run)]
    blocks.append(Heading("Evaluation"))
    if run.models:
        blocks.append(comparison_table(run.models))
    else:
        blocks.append(Paragraph("Not evaluated against the teacher yet (`lmdistill eval --output RUN_DIR/evaluation.json`, "
                                "then `lmdistill report RUN_DIR` refreshes this card)."))
    if run.eval_rows:
        last = run.eval_rows[-1]
        rows = [[k.removeprefix("eval/"), format_value(v)] for k, v in last.items() if k.startswith("eval/")]
        blocks += [Paragraph(f"Held-out evaluation during training, step {last['step']}:"), Table(["metric", "value"], rows)]
    blocks += [Heading("Reproduce"), Paragraph(f"Made with lmdistill {info.get('lmdistill_version', 'unknown')}:")]
    if info.get("command"):
        blocks.append(Code(info["command"], "bash"))
    blocks.append(Paragraph("The resolved configuration (`config.yaml` of the run):"))
    if run.config_text:
        blocks.append(Code(run.config_text, "yaml"))
    return ModelCard.from_template(metadata, template_str="---\n{{ card_data }}\n---\n\n{{ body }}",
                                   body=render_markdown(blocks))


def write_model_card(run_dir: str | Path) -> Path | None:
    """Write ``RUN_DIR/student/README.md`` (atomically); None when the run has no exported student yet, or no
    metrics line yet (a run stopped before its first ``train.log_every`` steps)."""
    student_dir = Path(run_dir) / "student"
    if not student_dir.is_dir() or not (Path(run_dir) / "metrics.jsonl").is_file():
        return None
    return write_atomically(student_dir / CARD_FILE, str(build_model_card(run_dir)))
