"""What the training loop calls when the teacher is a cache: open + validate it, check the terms, compute them."""

from __future__ import annotations

import torch

from lmdistill.cache.reader import TeacherCache
from lmdistill.errors import UserError
from lmdistill.losses import reduce, spec
from lmdistill.losses.sparse import SparseTeacher, sparse_version


def open_run_cache(path: str, tokenizer, train_examples: list[dict]) -> TeacherCache:
    """The run's cache, checked against its tokenizer and training examples (UserError on any mismatch)."""
    cache = TeacherCache(path)
    cache.validate(tokenizer, train_examples)
    return cache


def check_terms_for_cache(terms) -> None:
    """UserError before training when a term cannot be fed from a cache (feature terms, logit losses without a
    sparse version)."""
    for term in terms:
        if term.kind in ("hidden", "attention"):
            raise UserError(f"objective term {term.name!r} needs teacher {term.kind} states; a teacher cache holds logits only")
        if term.kind == "logits":
            sparse_version(term.name)


def cached_teacher_terms(
    terms,
    student_logits: torch.Tensor,
    teacher: SparseTeacher,
    targets: torch.Tensor,
    masks,
    progress: float,
    *,
    vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Each term's reduced value (unweighted), keyed by label, like ``objective.compute_terms`` for a cached teacher.

    ``student_logits`` (B, S-1, V) and ``teacher`` (B, S-1, k) are aligned with ``targets`` (B, S-1);
    ``vocab_size`` (the cache's) cuts the student's padding rows off, as ``shared_vocab`` does for live teachers.
    """
    if vocab_size is not None and student_logits.shape[-1] != vocab_size:
        if student_logits.shape[-1] < vocab_size:
            raise UserError(
                f"the student's vocabulary ({student_logits.shape[-1]}) is smaller than the cached teacher's ({vocab_size}); "
                "distil into a student that shares the teacher's tokenizer"
            )
        student_logits = student_logits[..., :vocab_size]
    values: dict[str, torch.Tensor] = {}
    for term in terms:
        params = term.params_at(progress)
        if term.kind == "labels":
            per_position = spec(term.name).fn(student_logits, targets, **params)
        elif term.kind == "logits":
            per_position = sparse_version(term.name)(student_logits, teacher, **params)
        else:
            raise UserError(f"objective term {term.name!r} needs teacher {term.kind} states; a teacher cache holds logits only")
        values[term.label] = reduce(per_position, masks.loss, num_valid=masks.loss_count)
    return values
