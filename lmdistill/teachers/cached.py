"""A teacher-signal cache made by ``lmdistill cache``: the teacher's top-k log-probs, read instead of running it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lmdistill.cache.reader import TeacherCache
from lmdistill.errors import UserError
from lmdistill.losses import reduce
from lmdistill.losses.sparse import SparseTeacher, sparse_version
from lmdistill.objective import Features, Masks, Needs
from lmdistill.teachers.base import refuse_span_terms


@dataclass
class SparseTeacherBatch:
    """The cached top-k signal of a micro-batch, aligned with the task's targets: (B, S-1, k)."""

    sparse: SparseTeacher
    vocab_size: int
    features: Features = field(default_factory=Features)  # a cache holds no hidden states or attention

    def logit_term(self, name: str, params: dict[str, Any], student: Features, masks: Masks) -> torch.Tensor:
        student_vocab = student.logits.shape[-1] if student.logits is not None else student.head_weight.shape[0]
        if student_vocab < self.vocab_size:
            raise UserError(
                f"the student's vocabulary ({student_vocab}) is smaller than the cached teacher's ({self.vocab_size}); "
                "distil into a student that shares the teacher's tokenizer"
            )
        if student.logits is None:
            # A large vocabulary: the student's head runs on the loss positions only, (N, V) instead of (B, S, V).
            rows = masks.loss.to(torch.bool)
            student_logits = student.loss_row_logits(masks)[:, :self.vocab_size]  # shared with a CE term
            per_position = sparse_version(name)(student_logits, self.sparse.map(lambda t: t[rows]), **params)
            return reduce(per_position, torch.ones_like(per_position, dtype=torch.bool), num_valid=masks.loss_count)
        # The student's padding rows beyond the cache's vocabulary are cut, as shared_vocab does for live teachers.
        per_position = sparse_version(name)(student.logits[..., :self.vocab_size], self.sparse, **params)
        return reduce(per_position, masks.loss, num_valid=masks.loss_count)


class CachedTeacher:
    """Reads each micro-batch's teacher signal from the cache by example index; holds no model."""

    model = None
    student_runs_headless = True  # with a large vocabulary (the run decides): the head runs at loss positions only

    def __init__(self, path: str, tokenizer, train_examples: list[dict]):
        self.cache = TeacherCache(path)
        self.cache.validate(tokenizer, train_examples)  # UserError on any mismatch with the run's data

    def check_terms(self, terms) -> None:
        refuse_span_terms(terms)
        for term in terms:
            if term.kind in ("hidden", "attention"):
                raise UserError(f"objective term {term.name!r} needs teacher {term.kind} states; a teacher cache holds logits only")
            if term.kind == "tokens":
                raise UserError(f"objective term {term.name!r} scores the student's own samples with the teacher; a "
                                "teacher cache holds only the training data's signal, so use teacher.path")
            if term.kind == "logits":
                sparse_version(term.name)  # UserError for a loss without a sparse version

    def to(self, device) -> None:
        return None

    def batch(self, batch, example_indices, needs: Needs, task) -> SparseTeacherBatch:
        device = batch["input_ids"].device
        sparse = self.cache.teacher_batch(example_indices, batch[task.cached_positions].shape[1])
        return SparseTeacherBatch(sparse.map(lambda t: task.align_positions(t).to(device)), self.cache.vocab_size)
