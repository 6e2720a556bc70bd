"""Fine-tune a model on labels alone (plain cross-entropy) with the distillation engine, e.g. to make a teacher.

A fine-tune config is a run config without ``teacher`` whose ``student`` is the model to tune; ``objective``
defaults to ``[{name: ce}]`` and may hold only label terms; no teacher is loaded. A fresh classifier head takes its
size from the data (``data.labels``, else the largest label + 1); ``num_labels: K`` sets it explicitly. The output
(``output_dir/student``) is a Hugging Face dir usable as ``teacher.path`` of a distillation run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any


from transformers import AutoModelForSequenceClassification

from lmdistill.config import RunConfig, parse_config
from lmdistill.errors import UserError
from lmdistill.losses import spec
from lmdistill.models.loading import load_model, load_tokenizer


def finetune_config(raw: dict[str, Any], *, source: str = "config") -> RunConfig:
    """Validate a raw fine-tune config into the :class:`RunConfig` the engine runs (see the module docstring)."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of settings at the top level")
    raw = copy.deepcopy(raw)
    if "teacher" in raw:
        raise UserError(f"{source}: a fine-tune config has no teacher; put the model to tune under `student`")
    num_labels = raw.pop("num_labels", None)
    raw.setdefault("objective", [{"name": "ce"}])
    student = raw.get("student")
    if not isinstance(student, dict) or not (student.get("path") or student.get("config")):
        raise UserError(f"{source}: student must give `path` (a model dir) or `config` (fresh weights) to fine-tune")
    if num_labels is not None:
        if raw.get("task") != "sequence_classification":
            raise UserError(f"{source}: num_labels applies to task: sequence_classification only")
        if student.get("path"):
            student["path"] = str(_with_classifier(student["path"], int(num_labels), Path(str(raw.get("output_dir", ".")))))
        else:
            student["config"] = {**student["config"], "num_labels": int(num_labels)}
    objective = raw["objective"] if isinstance(raw["objective"], list) else []
    teacher_terms = [term["name"] for term in objective if isinstance(term, dict) and isinstance(term.get("name"), str)
                     and spec(term["name"]).kind != "labels"]
    if teacher_terms:
        raise UserError(f"{source}: fine-tuning uses label terms only, but the objective has {teacher_terms}; "
                        "use `lmdistill train` to distil from a teacher")
    return parse_config(raw, source=source)


def _with_classifier(path: str, num_labels: int, output_dir: Path) -> Path:
    """Save ``path`` with a fresh ``num_labels``-way classifier head to ``output_dir/initial`` (once) and return it."""
    initial = output_dir / "initial"
    if not (initial / "config.json").is_file():
        model = load_model(path, model_class=AutoModelForSequenceClassification, what="student", num_labels=num_labels,
                           ignore_mismatched_sizes=True)
        model.save_pretrained(initial)
        try:
            load_tokenizer(path).save_pretrained(initial)
        except UserError:
            pass  # a model dir without tokenizer files: the config's `tokenizer` must name one
    return initial
