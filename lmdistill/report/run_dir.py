"""Read a run directory as the training loop writes it: config.yaml, metrics.jsonl, evaluation.json (optional).

Contract: ``metrics.jsonl`` holds one JSON object per line with an int ``step`` and a ``split`` of "train"
(``loss``, ``loss/<term>``, ``lr``, ``tokens_per_second``, ``elapsed_s``) or "eval" (``eval/<metric>``);
``evaluation.json`` is ``{"models": {"teacher": {...}, "student": {...}, "baseline": {...}}}``, any key missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdistill.errors import UserError


@dataclass
class RunRecord:
    """Everything the report shows, read from one run directory."""

    run_dir: Path
    config_text: str | None
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    models: dict[str, dict[str, Any]] | None
    notes: list[str] = field(default_factory=list)
    samples: list[dict[str, str]] = field(default_factory=list)  # held-out prompts with each model's answer
    pruning: dict[str, Any] = field(default_factory=dict)  # what importance pruning measured and kept


def is_number(value: Any) -> bool:
    """True for int and float values (bool excluded: JSON true is not a metric)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_metrics(path: Path, notes: list[str]) -> tuple[list[dict], list[dict]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    last_content = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    train_rows: list[dict] = []
    eval_rows: list[dict] = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if index == last_content:
                # a run killed mid-write leaves a partial last line; everything before it is still good
                notes.append(f"Ignored an unreadable last line ({index + 1}) of metrics.jsonl, probably cut off mid-write.")
                continue
            raise UserError(f"{path} line {index + 1} is not valid JSON: fix or delete that line") from None
        if not isinstance(row, dict) or not is_number(row.get("step")):
            raise UserError(f"{path} line {index + 1} is not a JSON object with a numeric 'step': fix or delete that line")
        if row.get("split") == "train":
            train_rows.append(row)
        elif row.get("split") == "eval":
            eval_rows.append(row)
    return train_rows, eval_rows


def _read_evaluation(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}): rewrite or delete it") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise UserError(f'{path} needs the form {{"models": {{"teacher": {{...}}, "student": {{...}}}}}}: rewrite or delete it')
    samples = data.get("samples", [])
    if not isinstance(samples, list) or not all(isinstance(row, dict) for row in samples):
        raise UserError(f'{path}: "samples" must be a list of {{"prompt": ..., MODEL: answer}} objects; rewrite or delete it')
    return {"models": models, "samples": samples, "pruning": data.get("pruning") or {}}


def load_run(run_dir: str | Path) -> RunRecord:
    """Read ``run_dir``; raises UserError when the directory or its ``metrics.jsonl`` is missing or malformed."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: pass the directory a training run wrote")
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise UserError(f"{metrics_path} not found: {run_dir} is not a training run directory (train first, or pass the right path)")
    notes: list[str] = []
    train_rows, eval_rows = _read_metrics(metrics_path, notes)
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
    evaluation_path = run_dir / "evaluation.json"
    evaluation = _read_evaluation(evaluation_path) if evaluation_path.is_file() else {"models": None, "samples": [], "pruning": {}}
    return RunRecord(run_dir, config_text, train_rows, eval_rows, evaluation["models"], notes, evaluation["samples"],
                     evaluation["pruning"])
