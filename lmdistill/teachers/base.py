"""The teacher-signal interface: where the objective's teacher side comes from.

A live model with materialised logits, a live model through the fused large-vocabulary head, a top-k cache and a
weighted mixture of models are implementations; a teacher with another tokenizer or a remote teacher is one more.
The loop asks a signal for one :class:`~lmdistill.objective.TeacherBatch` per micro-batch and hands it to
:func:`~lmdistill.objective.compute_terms`; it never knows which signal it holds.
"""

from __future__ import annotations

from typing import Protocol

import torch

from lmdistill.errors import UserError
from lmdistill.objective import Needs, TeacherBatch, Term


def refuse_span_terms(terms: list[Term]) -> None:
    """UserError for ``spans`` terms: only a teacher with its own tokenizer aligns text spans across tokenizers."""
    for term in terms:
        if term.kind == "spans":
            raise UserError(f"objective term {term.name!r} compares text spans across two tokenizers; give the teacher "
                            "its own tokenizer (teacher: {path: ..., tokenizer: ...}) or use a logit loss such as forward_kl")


class TeacherSignal(Protocol):
    # The live model that evaluation compares the student with (agreement, KL); None when there is none (a cache).
    model: torch.nn.Module | None
    # True: the student gives its last hidden state and lm_head instead of logits (the fused large-vocabulary path).
    student_runs_headless: bool

    def check_terms(self, terms: list[Term]) -> None:
        """UserError before training when a term cannot be fed from this signal."""
        ...

    def to(self, device: torch.device) -> None: ...

    def batch(self, batch: dict[str, torch.Tensor], example_indices: list[int], needs: Needs, task) -> TeacherBatch:
        """The teacher side of one micro-batch (``example_indices``: the training examples it holds, in order)."""
        ...
