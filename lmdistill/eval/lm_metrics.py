"""Token-level language-model metrics: negative log-likelihood, perplexity, bits per byte, teacher agreement.

Every function here takes logits that are already aligned with their targets: the causal shift (logits at
position t predict the token at t + 1) is the caller's job, so these functions never guess it.
Sums and counts are returned separately so a caller can accumulate over batches and normalise once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmdistill.losses import IGNORE_INDEX


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[float, int]:
    """Summed negative log-likelihood of ``labels`` under ``logits`` and the number of scored tokens.

    Shapes: ``logits`` (B, S, V), ``labels`` (B, S) already aligned with ``logits`` (no shift here);
    positions whose label is ``ignore_index`` are skipped.
    Formula: nll_sum = Σ_{valid b,t} −log softmax(logits[b, t])[labels[b, t]], computed in float32.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} are not aligned")
    nll_sum = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=ignore_index, reduction="sum"
    )
    token_count = int((labels != ignore_index).sum())
    return float(nll_sum), token_count


def perplexity(nll_sum: float, count: int) -> float:
    """Perplexity from a summed NLL: exp(nll_sum / count); NaN when ``count`` is 0, inf on overflow."""
    if count <= 0:
        return float("nan")
    try:
        return math.exp(nll_sum / count)
    except OverflowError:
        return float("inf")


def bits_per_byte(nll_sum: float, num_bytes: int) -> float:
    """Bits per UTF-8 byte of the scored text, a vocabulary-independent loss: nll_sum / (ln 2 · num_bytes).

    ``nll_sum`` is in nats (as from :func:`token_nll_sum`); NaN when ``num_bytes`` is 0.
    """
    if num_bytes <= 0:
        return float("nan")
    return nll_sum / (math.log(2) * num_bytes)


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ;"
            " slice both to the shared vocabulary first"
        )
    if student_logits.shape[:-1] != mask.shape:
        raise ValueError(f"mask {tuple(mask.shape)} does not match logits {tuple(student_logits.shape)}")


def top1_match_count(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor
) -> tuple[int, int]:
    """Number of valid positions where student and teacher argmax agree, and the number of valid positions.

    Shapes: ``student_logits`` and ``teacher_logits`` (B, S, V) over the same vocabulary, ``mask`` (B, S) bool or {0, 1}.
    """
    _check_pair(student_logits, teacher_logits, mask)
    valid = mask.to(torch.bool)
    matches = (student_logits.argmax(-1) == teacher_logits.argmax(-1)) & valid
    return int(matches.sum()), int(valid.sum())


def top1_agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of valid positions whose student argmax equals the teacher argmax (NaN with no valid position).

    Shapes: as :func:`top1_match_count`. Ties resolve to the lowest token id, as ``torch.argmax`` does.
    """
    matches, count = top1_match_count(student_logits, teacher_logits, mask)
    return matches / count if count else float("nan")


def token_kl_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed forward KL(p_t ‖ p_s) over valid positions at temperature 1, and the number of valid positions.

    Shapes: ``student_logits``, ``teacher_logits`` (B, S, V), ``mask`` (B, S).
    Formula: Σ_{valid b,t} Σ_v p_t(v)·(log p_t(v) − log p_s(v)), p = softmax(logits) in float32.
    """
    _check_pair(student_logits, teacher_logits, mask)
    valid = mask.to(torch.bool)
    student_log_probs = F.log_softmax(student_logits.float(), dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float(), dim=-1)
    per_position = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="none").sum(-1)
    # where, not multiply: a masked position with inf logits must not turn the sum into NaN
    kl_sum = torch.where(valid, per_position, torch.zeros((), dtype=per_position.dtype)).sum()
    return float(kl_sum), int(valid.sum())


def mean_token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over valid positions of KL(p_t ‖ p_s) at temperature 1 (NaN with no valid position).

    Shapes: as :func:`token_kl_sum`.
    """
    kl_sum, count = token_kl_sum(student_logits, teacher_logits, mask)
    return kl_sum / count if count else float("nan")
