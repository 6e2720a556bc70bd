"""``compute_terms``: every term's reduced value, whatever the teacher signal (live, fused, cached, mixture ...).

The trainer never knows a loss by its name: each term says which inputs it needs (labels, logits, hidden states,
attention). Label terms read the student alone; logit terms ask the teacher batch, which knows how its signal is
held (materialised logits, hidden state + head, top-k log-probs ...); feature terms read the teacher batch's
hidden states and attention. Masks and normalisation go through :func:`lmdistill.losses.reduce` with global
valid-position counts, so accumulation and data parallelism give the same loss as one big batch.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import torch

from lmdistill.losses import reduce, spec
from lmdistill.losses.fused_ce import chunked_linear_cross_entropy, chunked_linear_target_log_probs
from lmdistill.losses.sampled import target_log_probs
from lmdistill.objective.features import Features, Masks
from lmdistill.objective.terms import Term


class TeacherBatch(Protocol):
    """A teacher signal's output for one micro-batch, as the objective reads it.

    ``features`` holds the teacher's hidden states and attention when the signal has them (a cache does not).
    """

    features: Features

    def logit_term(self, name: str, params: dict[str, Any], student: Features, masks: Masks) -> torch.Tensor:
        """The reduced value of logit divergence ``name`` (a registry name) between the student and this teacher."""
        ...

    # Signals that align text spans (a teacher with another tokenizer) also give
    # ``span_term(name, params, student, masks)``: the reduced value of a ``spans`` loss; the others refuse such
    # terms in their ``check_terms``.
    # Signals with the student's vocabulary and positions also give ``target_log_probs(targets, masks)``: the
    # teacher's log-probability of each target token (...), for ``tokens`` terms; the others refuse those.


def compute_terms(
    terms: list[Term],
    student: Features,
    teacher: TeacherBatch | None,
    targets: torch.Tensor,
    masks: Masks,
    projections: torch.nn.ModuleDict | None,
    progress: float,
) -> dict[str, torch.Tensor]:
    """Each term's reduced value (unweighted), keyed by label. ``teacher`` is None when only label terms remain.

    Logits are already aligned with ``targets`` (the task did any causal shift); ``masks.loss`` marks the valid ones.
    """
    values: dict[str, torch.Tensor] = {}
    # Logit terms first: a teacher that applies the student's head at the loss positions (a sparse cache) leaves
    # those logits in ``student`` for the label terms to share, instead of their chunked recomputation.
    for term in sorted(terms, key=lambda term: term.kind != "logits"):
        params = term.params_at(progress)
        fn = spec(term.name).fn
        if term.kind == "labels":
            values[term.label] = label_term(fn, params, student, targets, masks)
        elif term.kind == "logits":
            values[term.label] = teacher.logit_term(term.name, params, student, masks)
        elif term.kind == "spans":
            values[term.label] = teacher.span_term(term.name, params, student, masks)
        elif term.kind == "tokens":
            teacher_log_probs = teacher.target_log_probs(targets, masks)
            per_position = fn(student_target_log_probs(student, targets, masks), teacher_log_probs, **params)
            values[term.label] = reduce(per_position, masks.loss, num_valid=masks.loss_count)
        elif term.kind == "hidden":
            values[term.label] = _hidden_term(term, fn, params, student, teacher.features, masks, projections)
        elif term.kind == "attention":
            values[term.label] = _attention_term(term, fn, params, student, teacher.features, masks)
        else:  # pragma: no cover - the registry only knows these kinds
            raise AssertionError(term.kind)
    return {term.label: values[term.label] for term in terms}


def label_term(fn, params: dict[str, Any], student: Features, targets: torch.Tensor, masks: Masks) -> torch.Tensor:
    """A hard-label term; from the last hidden state and head, chunk by chunk, when the student has no logits (or
    from the loss positions' logits when a teacher term already computed them)."""
    if student.logits is None and student.loss_rows is not None:
        rows = masks.loss.to(torch.bool)
        per_position = fn(student.loss_rows, targets[rows], **params)
        return reduce(per_position, torch.ones_like(per_position, dtype=torch.bool), num_valid=masks.loss_count)
    if student.logits is None:
        return chunked_linear_cross_entropy(student.last_hidden, student.head_weight, targets, bias=student.head_bias,
                                            mask=masks.loss, num_valid=masks.loss_count, logit_softcap=student.logit_softcap,
                                            **params)
    return reduce(fn(student.logits, targets, **params), masks.loss, num_valid=masks.loss_count)


def student_target_log_probs(student: Features, targets: torch.Tensor, masks: Masks) -> torch.Tensor:
    """The student's log-probability of each target token (...), from its logits or, without them, from its last
    hidden state and head chunk by chunk."""
    if student.logits is None:
        return chunked_linear_target_log_probs(student.last_hidden, student.head_weight, targets, bias=student.head_bias,
                                               mask=masks.loss, logit_softcap=student.logit_softcap)
    return target_log_probs(student.logits, targets)


def _hidden_term(term, fn, params, student: Features, teacher: Features, masks: Masks, projections) -> torch.Tensor:
    positions, count = masks.of(term.positions)  # the term's stack's positions (seq2seq: source or decoder)
    per_pair = []
    for s, t in term.layer_pairs:
        student_hidden = student.hidden_states[term.stack][s + 1]
        teacher_hidden = teacher.hidden_states[term.stack][t + 1]
        if projections is not None and term.label in projections:
            student_hidden = projections[term.label](student_hidden)
        # Relation losses over positions (hidden_mmd) take the padding mask; per-position ones do not.
        extra = {"key_mask": positions} if "key_mask" in inspect.signature(fn).parameters else {}
        per_pair.append(reduce(fn(student_hidden, teacher_hidden, **params, **extra), positions, num_valid=count))
    return torch.stack(per_pair).mean()  # (1/N)·Σ over layer pairs


def _attention_term(term, fn, params, student: Features, teacher: Features, masks: Masks) -> torch.Tensor:
    # Queries and keys may be different sequences (cross-attention: decoder positions over source tokens).
    queries, count = masks.of(term.positions)
    keys, _ = masks.of(term.keys)
    per_pair = [
        reduce(fn(student.attentions[term.stack][s], teacher.attentions[term.stack][t], key_mask=keys, **params), queries,
               num_valid=count)
        for s, t in term.layer_pairs
    ]
    return torch.stack(per_pair).mean()


def total_loss(terms: list[Term], values: dict[str, torch.Tensor], progress: float) -> torch.Tensor:
    """Σ weight(progress) · value over the terms."""
    return sum(term.weight_at(progress) * values[term.label] for term in terms)
