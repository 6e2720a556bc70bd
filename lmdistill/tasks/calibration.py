"""Calibration for importance pruning: a few training batches of the task, and the task's loss on them."""

from __future__ import annotations

from typing import Callable

import torch

from lmdistill.models.heads import model_inputs
from lmdistill.models.importance import Calibration
from lmdistill.tasks.base import Task


def calibration_batches(task: Task, examples: list[dict], pad_token_id: int, *, count: int, batch_size: int,
                        seed: int) -> list[dict[str, torch.Tensor]]:
    """``count`` training examples (a seeded random choice, so a resumed run scores the same ones), in batches."""
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()[:count]
    chosen = [examples[i] for i in order]
    return [task.collate(chosen[start:start + batch_size], pad_token_id) for start in range(0, len(chosen), batch_size)]


def task_loss(task: Task) -> Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]:
    """The mean cross-entropy of a model on a batch at the task's loss positions (what the CE term trains)."""
    def loss_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        device = next(model.parameters()).device
        batch = {key: value.to(device) for key, value in batch.items()}
        logits = task.output_logits(model(**model_inputs(batch)), batch)
        targets, mask = task.targets(batch)
        return torch.nn.functional.cross_entropy(logits[mask].float(), targets[mask])
    return loss_of


def task_calibration(task: Task, examples: list[dict], pad_token_id: int, *, count: int, batch_size: int,
                     seed: int) -> Calibration:
    """Calibration batches of ``examples`` and the task's loss, for importance pruning."""
    return Calibration(calibration_batches(task, examples, pad_token_id, count=count, batch_size=batch_size, seed=seed),
                       task_loss(task))
