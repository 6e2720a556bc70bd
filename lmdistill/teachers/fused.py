"""A live teacher through the fused large-vocabulary head: no (tokens x vocab) logits are ever materialised.

Both models run without their lm_head; logit terms go through
:func:`lmdistill.losses.fused.fused_linear_divergence` on the last hidden states and the heads, chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from lmdistill.errors import UserError
from lmdistill.losses.cross_vocab import CROSS_VOCAB_LOSSES
from lmdistill.losses.fused import fused_linear_divergence
from lmdistill.losses.fused_ce import chunked_linear_target_log_probs
from lmdistill.models.heads import run_without_head
from lmdistill.objective import Features, Masks, Needs, forward_features
from lmdistill.teachers.base import refuse_span_terms


@dataclass
class FusedTeacherBatch:
    """Teacher features with the last hidden state and output head instead of logits."""

    features: Features

    def logit_term(self, name: str, params: dict[str, Any], student: Features, masks: Masks) -> torch.Tensor:
        teacher = self.features
        size = min(student.head_weight.shape[0], teacher.head_weight.shape[0])
        return fused_linear_divergence(
            student.last_hidden, student.head_weight[:size], teacher.last_hidden, teacher.head_weight[:size],
            student_bias=None if student.head_bias is None else student.head_bias[:size],
            teacher_bias=None if teacher.head_bias is None else teacher.head_bias[:size],
            divergence=name, mask=masks.loss, num_valid=masks.loss_count, logit_softcap=student.logit_softcap, **params,
        )

    def target_log_probs(self, targets: torch.Tensor, masks: Masks) -> torch.Tensor:
        teacher = self.features
        with torch.no_grad():
            return chunked_linear_target_log_probs(teacher.last_hidden, teacher.head_weight, targets,
                                                   bias=teacher.head_bias, mask=masks.loss,
                                                   logit_softcap=teacher.logit_softcap)


class FusedTeacher:
    """One frozen causal-LM teacher run without its lm_head; the student must run without its own as well."""

    student_runs_headless = True

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self._run = partial(run_without_head, model)

    def check_terms(self, terms) -> None:
        refuse_span_terms(terms)
        for term in terms:
            if term.name in CROSS_VOCAB_LOSSES:  # the chunked kernels know the same-vocabulary divergences only
                raise UserError(f"objective term {term.name!r} has no fused large-vocabulary version; use forward_kl, "
                                "reverse_kl, jsd ... for a teacher sharing the student's tokenizer, or raise "
                                "train.fused_vocab_threshold above the vocabulary size")

    def to(self, device) -> None:
        self.model.to(device)

    def batch(self, batch, example_indices, needs: Needs, task) -> FusedTeacherBatch:
        return FusedTeacherBatch(forward_features(self._run, batch, needs, task, grad=False, head_model=self.model))
