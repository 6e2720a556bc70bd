"""Tasks: one module each (see :mod:`lmdistill.tasks.base` for the interface); adding a task is a module plus a line
in ``TASKS``."""

from __future__ import annotations

from lmdistill.errors import UserError
from lmdistill.tasks.base import Task, check_config, check_terms
from lmdistill.tasks.causal import CausalLMTask
from lmdistill.tasks.classification import SequenceClassificationTask
from lmdistill.tasks.question_answering import QuestionAnsweringTask
from lmdistill.tasks.seq2seq import Seq2SeqLMTask

TASKS: dict[str, type] = {
    CausalLMTask.name: CausalLMTask,
    SequenceClassificationTask.name: SequenceClassificationTask,
    QuestionAnsweringTask.name: QuestionAnsweringTask,
    Seq2SeqLMTask.name: Seq2SeqLMTask,
}


def get_task(name: str) -> Task:
    """A fresh instance of task ``name`` (tasks keep what they learn from their data, e.g. the label count)."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]()


__all__ = ["TASKS", "Task", "check_config", "check_terms", "get_task"]
