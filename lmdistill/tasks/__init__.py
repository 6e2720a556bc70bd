"""Tasks: how a kind of data becomes batches, which logit positions are distilled, and how a student is evaluated.

The training loop is task-agnostic; it asks the task for datasets, batches and targets. A task's logits are
*aligned* with its targets: for causal LMs position t of the aligned logits predicts token t+1.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Task(Protocol):
    name: str

    def load_datasets(self, data, tokenizer, seed: int) -> tuple[list[dict], list[dict] | None]: ...

    def collate(self, examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]: ...

    def align_logits(self, logits: torch.Tensor) -> torch.Tensor: ...

    def targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, loss_mask) aligned with :meth:`align_logits`'s output."""
        ...

    def evaluate(self, student, teacher, examples: list[dict], pad_token_id: int, batch_size: int, device) -> dict[str, Any]: ...


def get_task(name: str) -> Task:
    if name == "causal_lm":
        from lmdistill.tasks.causal import CausalLMTask

        return CausalLMTask()
    if name == "sequence_classification":
        from lmdistill.tasks.classification import SequenceClassificationTask

        return SequenceClassificationTask()
    raise AssertionError(name)  # the config only allows the names above
