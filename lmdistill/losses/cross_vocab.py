"""Losses between distributions over *different* vocabularies (cross-tokenizer distillation).

The rows compared are aligned positions (the same text before both; see :mod:`lmdistill.data.alignment`), so the
logits are (..., V_s) for the student and (..., V_t) for the teacher with V_s ≠ V_t in general. With one
vocabulary they are ordinary logit losses too (ULD then compares sorted distributions; the hybrid is a KL).
p_s = softmax(z_s / T), p_t = softmax(z_t / T); math in float32 (float64 for float64 inputs). No T² scaling.

- ``uld`` (Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss"):
  the Wasserstein-1 distance between the two distributions under a cost that ignores token identity, which is the
  L1 distance of the probability vectors sorted in decreasing order, the shorter one padded with zeros:
  ULD = Σ_i |p_s↓_i − p_t↓_i|. With ``top_k`` only the k largest of each are sorted and the rest is one bucket:
  Σ_{i≤k} |p_s↓_i − p_t↓_i| + |(1 − Σ_{i≤k} p_s↓_i) − (1 − Σ_{i≤k} p_t↓_i)| (a lower bound, exact when k ≥ V).
- ``gold_hybrid`` (after TRL's GOLD trainer): tokens whose strings are equal in both vocabularies (the exact map M)
  compare one to one; everything else is one "rest" bucket in the KL and is compared by ULD:
  KL(q_t ‖ q_s) with q = (p[m] for m in M, Σ_{unmapped} p)  +  uld_weight · Σ_i |u_s↓_i − u_t↓_i|
  where u is p with the mapped entries set to 0.
  Sorting whole vocabularies costs O(V log V) per aligned position (about a second per micro-batch of 256
  positions over 50k tokens on a loaded CPU); ``top_k`` (e.g. 64) keeps the k largest and is far cheaper.
- ``span_logprob_mse``: for a span of text aligned on both sides, log p(span) = Σ over the side's tokens of the
  token's log-probability; ½ (log p_s(span) − log p_t(span))².
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmdistill.errors import UserError
from lmdistill.losses.logits import _compute_dtype, _kl_from_log_probs
from lmdistill.losses.registration import register


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if not float(temperature) > 0.0:
        raise UserError(f"distillation temperature={temperature} must be > 0; use 1.0 for plain softmax")
    return torch.softmax(logits.to(_compute_dtype(logits)) / temperature, dim=-1)


def sorted_l1(student_probs: torch.Tensor, teacher_probs: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """Σ_i |a↓_i − b↓_i| over probability vectors sorted in decreasing order (zero-padded to one length).

    (..., V_s), (..., V_t) -> (...). ``top_k``: the k largest of each plus one bucket for the remaining mass.
    """
    if top_k is not None:
        if int(top_k) < 1:
            raise UserError(f"uld top_k={top_k} must be >= 1 (or null for the full sort)")
        student_top = torch.topk(student_probs, min(int(top_k), student_probs.shape[-1]), dim=-1).values
        teacher_top = torch.topk(teacher_probs, min(int(top_k), teacher_probs.shape[-1]), dim=-1).values
        width = max(student_top.shape[-1], teacher_top.shape[-1])
        student_top = F.pad(student_top, (0, width - student_top.shape[-1]))
        teacher_top = F.pad(teacher_top, (0, width - teacher_top.shape[-1]))
        rest = (student_probs.sum(-1) - student_top.sum(-1)) - (teacher_probs.sum(-1) - teacher_top.sum(-1))
        return (student_top - teacher_top).abs().sum(-1) + rest.abs()
    width = max(student_probs.shape[-1], teacher_probs.shape[-1])
    student_sorted = F.pad(torch.sort(student_probs, dim=-1, descending=True).values, (0, width - student_probs.shape[-1]))
    teacher_sorted = F.pad(torch.sort(teacher_probs, dim=-1, descending=True).values, (0, width - teacher_probs.shape[-1]))
    return (student_sorted - teacher_sorted).abs().sum(-1)


@register("uld", "logits")
def uld(student_logits, teacher_logits, *, temperature: float = 1.0, top_k: int | None = None):
    """Universal logit distillation (Boizard et al. 2024): L1 between sorted p_s and p_t, any two vocabularies. (..., V_s), (..., V_t) -> (...)."""
    return sorted_l1(_probs(student_logits, temperature), _probs(teacher_logits, temperature), top_k)


def _log_rest(log_probs: torch.Tensor, unmapped: torch.Tensor) -> torch.Tensor:
    """log Σ_{unmapped} p (-inf where every token is mapped): (..., V) -> (..., 1)."""
    if not bool(unmapped.any()):
        return torch.full_like(log_probs[..., :1], -math.inf)
    return torch.logsumexp(log_probs[..., unmapped], dim=-1, keepdim=True)


@register("gold_hybrid", "logits")
def gold_hybrid(student_logits, teacher_logits, *, temperature: float = 1.0, uld_weight: float = 1.0,
                top_k: int | None = None, token_map: tuple[torch.Tensor, torch.Tensor] | None = None):
    """GOLD-style hybrid: KL on exactly mapped tokens (+ one rest bucket) plus ULD on the unmapped mass. (..., V_s), (..., V_t) -> (...).

    ``token_map``: (student ids, teacher ids) of tokens with equal strings (one-to-one); None maps id i to id i over
    the shared ids (one tokenizer). ``top_k``: as in ``uld``, for the unmapped mass.
    """
    log_s = torch.log_softmax(student_logits.to(_compute_dtype(student_logits)) / _positive(temperature), dim=-1)
    log_t = torch.log_softmax(teacher_logits.to(_compute_dtype(teacher_logits)) / temperature, dim=-1)
    if token_map is None:
        shared = torch.arange(min(log_s.shape[-1], log_t.shape[-1]), device=log_s.device)
        token_map = (shared, shared)
    student_ids, teacher_ids = (ids.to(log_s.device) for ids in token_map)
    unmapped_s = torch.ones(log_s.shape[-1], dtype=torch.bool, device=log_s.device)
    unmapped_s[student_ids] = False
    unmapped_t = torch.ones(log_t.shape[-1], dtype=torch.bool, device=log_t.device)
    unmapped_t[teacher_ids] = False
    buckets_s = torch.cat([log_s[..., student_ids], _log_rest(log_s, unmapped_s)], dim=-1)
    buckets_t = torch.cat([log_t[..., teacher_ids], _log_rest(log_t, unmapped_t)], dim=-1)
    mapped = _kl_from_log_probs(buckets_t, buckets_s)
    rest = sorted_l1(log_s.exp() * unmapped_s, log_t.exp() * unmapped_t, top_k)
    return mapped + float(uld_weight) * rest


def _positive(temperature: float) -> float:
    if not float(temperature) > 0.0:
        raise UserError(f"distillation temperature={temperature} must be > 0; use 1.0 for plain softmax")
    return temperature


@register("span_logprob_mse", "spans")
def span_logprob_mse(student_span_log_probs, teacher_span_log_probs):
    """Span-level matching: ½ (log p_s(span) − log p_t(span))², each the sum of its side's token log-probs. (...) -> (...)."""
    difference = student_span_log_probs.to(_compute_dtype(student_span_log_probs)) - teacher_span_log_probs.to(
        _compute_dtype(student_span_log_probs))
    return 0.5 * difference.square()


# The logit losses that compare distributions over two different vocabularies (the others need one vocabulary).
CROSS_VOCAB_LOSSES = frozenset({"uld", "gold_hybrid"})
