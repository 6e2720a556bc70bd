"""Per-query losses between student and teacher self-attention (TinyBERT, MiniLM, MiniLMv2).

Inputs are :class:`AttentionCapture` tuples of one layer; outputs are (B, Q) per-query values that the caller reduces
with its query mask. Key masking is done here: ``key_mask`` (B, K) bool, True = real token. Padded keys are set to
the most negative finite value before the one softmax (as is -inf already in the scores), so they get probability
exactly 0 and a query whose keys are all masked gives 0 instead of NaN. Math runs in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lmdistill.errors import UserError
from lmdistill.losses.logits import _kl_from_log_probs
from lmdistill.losses.registration import register


class AttentionCapture(NamedTuple):
    """One layer's attention tensors; any may be None when the loss does not need it.

    query, key, value: (B, heads, S, d). scores: (B, heads, Q, K), raw pre-softmax scores (Q·Kᵀ/√d plus any
    additive mask the model applied).
    """

    query: torch.Tensor | None = None
    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    scores: torch.Tensor | None = None


def scores_from_probabilities(probabilities: torch.Tensor) -> torch.Tensor:
    """Scores for captured attention probabilities: log A, which differs from the raw scores by a per-row constant.

    softmax(log A) = A, so every softmax-based loss gives the same value; 0 probabilities become -inf. Not valid for
    ``attention_mse``, which compares raw scores.
    """
    return torch.log(probabilities)


def scores_from_query_key(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product scores Q·Kᵀ/√d: (B, h, Q, d) and (B, h, K, d) -> (B, h, Q, K)."""
    return query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])


def _float(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.float64 if tensor.dtype == torch.float64 else torch.float32)


def _require(capture: AttentionCapture, fields: tuple[str, ...], loss: str, side: str) -> list[torch.Tensor]:
    missing = [name for name in fields if getattr(capture, name) is None]
    if missing:
        raise UserError(
            f"loss {loss!r} needs the {side}'s attention {', '.join(missing)}; capture them for that layer"
        )
    return [_float(getattr(capture, name)) for name in fields]


def _same_heads(student: torch.Tensor, teacher: torch.Tensor, loss: str) -> None:
    if student.shape[1] != teacher.shape[1]:
        raise UserError(
            f"loss {loss!r} needs equal head counts, but the student has {student.shape[1]} and the teacher "
            f"{teacher.shape[1]}; use 'minilm_v2', whose relation heads need not match the model heads"
        )


def _scores(capture: AttentionCapture, loss: str, side: str) -> torch.Tensor:
    if capture.scores is None and capture.query is not None and capture.key is not None:
        return scores_from_query_key(_float(capture.query), _float(capture.key))
    return _require(capture, ("scores",), loss, side)[0]


def _masked_log_softmax(scores: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """log softmax over keys with padded keys excluded: (B, h, Q, K), key_mask (B, K) -> (B, h, Q, K)."""
    floor = torch.finfo(scores.dtype).min
    # -inf from a causal mask inside captured scores is raised to the same floor, so a query that sees no real key
    # (left padding) gets a uniform row and 0 loss rather than NaN values and NaN gradients.
    scores = scores.clamp(min=floor)
    if key_mask is not None:
        scores = torch.where(key_mask.to(torch.bool)[:, None, None, :], scores, torch.full_like(scores, floor))
    return torch.log_softmax(scores, dim=-1)


def _attention_distribution_kl(
    student_scores: torch.Tensor, teacher_scores: torch.Tensor, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """KL(softmax(t) ‖ softmax(s)) per row, mean over heads: (B, h, Q, K) -> (B, Q)."""
    log_student = _masked_log_softmax(student_scores, key_mask)
    log_teacher = _masked_log_softmax(teacher_scores, key_mask)
    return _kl_from_log_probs(log_teacher, log_student).mean(1)


@register("attention_kl", "attention")
def attention_kl(
    student: AttentionCapture, teacher: AttentionCapture, *, key_mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Attention-distribution KL: KL(A_t ‖ A_s), A = softmax(scores / T) over keys, mean over heads. -> (B, Q)."""
    if not float(temperature) > 0.0:
        raise UserError(f"attention temperature={temperature} must be > 0; use 1.0 for plain softmax")
    student_scores = _scores(student, "attention_kl", "student")
    teacher_scores = _scores(teacher, "attention_kl", "teacher")
    _same_heads(student_scores, teacher_scores, "attention_kl")
    return _attention_distribution_kl(student_scores / temperature, teacher_scores / temperature, key_mask)


@register("attention_mse", "attention")
def attention_mse(
    student: AttentionCapture, teacher: AttentionCapture, *, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Attention-score MSE (TinyBERT): mean over heads and valid keys of (S_s − S_t)² on raw scores. -> (B, Q).

    Padded keys, and entries that are -inf in both (a causal mask inside the scores), count as 0 in both, as
    TinyBERT zeroes masked scores; they are left out of the mean's denominator.
    """
    (student_scores,) = _require(student, ("scores",), "attention_mse", "student")
    (teacher_scores,) = _require(teacher, ("scores",), "attention_mse", "teacher")
    _same_heads(student_scores, teacher_scores, "attention_mse")
    valid = ~((student_scores == -math.inf) & (teacher_scores == -math.inf))
    if key_mask is not None:
        valid = valid & key_mask.to(torch.bool)[:, None, None, :]
    difference = torch.where(valid, student_scores - teacher_scores, torch.zeros_like(student_scores))
    count = valid.sum(dim=(1, 3)).clamp(min=1).to(difference.dtype)
    return difference.pow(2).sum(dim=(1, 3)) / count


def _relation_scores(features: torch.Tensor) -> torch.Tensor:
    """Self-relation X·Xᵀ/√d per head: (B, h, S, d) -> (B, h, S, S)."""
    return scores_from_query_key(features, features)


@register("minilm", "attention", self_attention_only=True)
def minilm(
    student: AttentionCapture, teacher: AttentionCapture, *, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MiniLM: KL(A_t ‖ A_s) + KL(VR_t ‖ VR_s), VR = softmax(V·Vᵀ/√d_k), each a mean over heads. -> (B, S).

    Needs equal head counts; the head widths d_k may differ (each side uses its own).
    """
    student_scores = _scores(student, "minilm", "student")
    teacher_scores = _scores(teacher, "minilm", "teacher")
    (student_value,) = _require(student, ("value",), "minilm", "student")
    (teacher_value,) = _require(teacher, ("value",), "minilm", "teacher")
    _same_heads(student_scores, teacher_scores, "minilm")
    _same_heads(student_value, teacher_value, "minilm")
    attention_term = _attention_distribution_kl(student_scores, teacher_scores, key_mask)
    value_term = _attention_distribution_kl(
        _relation_scores(student_value), _relation_scores(teacher_value), key_mask
    )
    return attention_term + value_term


def _relation_heads(features: torch.Tensor, num_relation_heads: int, side: str) -> torch.Tensor:
    """Concatenate attention heads and split into R relation heads: (B, h, S, d) -> (B, R, S, h·d / R)."""
    batch, heads, length, head_dim = features.shape
    width = heads * head_dim
    if width % num_relation_heads:
        raise UserError(
            f"num_relation_heads={num_relation_heads} does not divide the {side}'s attention width {width}; "
            "pick a number that divides both the student and teacher widths"
        )
    concatenated = features.transpose(1, 2).reshape(batch, length, width)
    return concatenated.reshape(batch, length, num_relation_heads, width // num_relation_heads).transpose(1, 2)


@register("minilm_v2", "attention", self_attention_only=True)
def minilm_v2(
    student: AttentionCapture, teacher: AttentionCapture, *, key_mask: torch.Tensor | None = None,
    num_relation_heads: int = 4,
) -> torch.Tensor:
    """MiniLMv2 multi-head relations: mean over Q, K, V and over R relation heads of KL(R_t ‖ R_s). -> (B, S).

    R_X = softmax(X_r·X_rᵀ/√d_r) after concatenating the heads of X and splitting into R heads of width d_r, so
    student and teacher head counts and widths may differ; R must divide both total widths.
    """
    if int(num_relation_heads) != num_relation_heads or num_relation_heads < 1:
        raise UserError(f"num_relation_heads={num_relation_heads} must be a positive integer")
    fields = ("query", "key", "value")
    student_features = _require(student, fields, "minilm_v2", "student")
    teacher_features = _require(teacher, fields, "minilm_v2", "teacher")
    terms = [
        _attention_distribution_kl(
            _relation_scores(_relation_heads(s, num_relation_heads, "student")),
            _relation_scores(_relation_heads(t, num_relation_heads, "teacher")),
            key_mask,
        )
        for s, t in zip(student_features, teacher_features)
    ]
    return torch.stack(terms).mean(0)
