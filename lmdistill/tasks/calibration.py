"""Calibration for importance pruning: a few training batches of the task, and the task's loss on them."""

from __future__ import annotations

from typing import Callable

import torch

from lmdistill.models.heads import model_inputs
from lmdistill.models.importance import block_influence, loss_increase
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


def layer_scorer(task: Task, examples: list[dict], pad_token_id: int, *, score: str, count: int, batch_size: int,
                 seed: int) -> Callable[[torch.nn.Module], list[float]]:
    """``model -> one importance score per transformer block`` on calibration batches of ``examples``."""
    def scores(model: torch.nn.Module) -> list[float]:
        batches = calibration_batches(task, examples, pad_token_id, count=count, batch_size=batch_size, seed=seed)
        if score == "loss_increase":
            return loss_increase(model, batches, task_loss(task))
        device = next(model.parameters()).device
        return block_influence(model, [{key: value.to(device) for key, value in batch.items()} for batch in batches])
    return scores
