"""A live teacher model whose logits are materialised: the objective compares (tokens x vocab) distributions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmdistill.losses import reduce, spec
from lmdistill.losses.sampled import target_log_probs
from lmdistill.objective import Features, Masks, Needs, forward_features
from lmdistill.teachers.base import refuse_span_terms


def shared_vocab(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut both to the shared vocabulary (sizes that differ only by padding rows, e.g. 151,936 vs 152,064)."""
    size = min(student_logits.shape[-1], teacher_logits.shape[-1])
    return student_logits[..., :size], teacher_logits[..., :size]


@dataclass
class DenseTeacherBatch:
    """Teacher features with materialised, aligned logits."""

    features: Features

    def logit_term(self, name: str, params: dict[str, Any], student: Features, masks: Masks) -> torch.Tensor:
        student_logits, teacher_logits = shared_vocab(student.logits, self.features.logits)
        return reduce(spec(name).fn(student_logits, teacher_logits, **params), masks.loss, num_valid=masks.loss_count)

    def target_log_probs(self, targets: torch.Tensor, masks: Masks) -> torch.Tensor:
        return target_log_probs(self.features.logits, targets)


class LiveTeacher:
    """One frozen teacher model run on every micro-batch, logits and all."""

    student_runs_headless = False

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def check_terms(self, terms) -> None:
        refuse_span_terms(terms)  # a live model gives every other feature

    def to(self, device) -> None:
        self.model.to(device)

    def batch(self, batch, example_indices, needs: Needs, task) -> DenseTeacherBatch:
        return DenseTeacherBatch(forward_features(self.model, batch, needs, task, grad=False))

