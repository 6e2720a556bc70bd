"""Per-position divergences against a *sparse* teacher: its top-k log-probabilities, their token ids and the tail mass.

The teacher distribution (at temperature 1) is known on k tokens; the remaining V − k tokens form one **tail bucket**
of mass m = 1 − Σ_top-k p. Both distributions are compared over k + 1 buckets: the k teacher tokens and the tail.
The student's tail mass is 1 − Σ_i q_i over the k ids (computed as a logsumexp over the other V − k log-probs, so it
is never negative and stays accurate when tiny).

Temperature: p_T ∝ exp(log p / T), renormalised. For the k known tokens this is exact (the constant log Z cancels),
so at k = V every divergence equals its live version in :mod:`lmdistill.losses.logits`. For k < V the tail's inner
shape is unknown: **it is assumed spread uniformly over its V − k tokens**, so its tempered mass is
(V − k)·(m / (V − k))^(1/T). At T = 1 nothing is approximated except the bucketing itself; for T > 1 this
underestimates a peaked tail's tempered mass (by Jensen) and for T < 1 overestimates it.
The student side is exact at any T: its tail bucket is Σ over the V − k non-top-k tokens of softmax(z_s / T).

Every function: ``fn(student_logits (..., V), teacher (SparseTeacher with (..., k) / (...) tensors), *,
temperature, scale_by_temperature_squared=True, **params) -> (...)``, never reduced. Math runs in float32
(float64 for float64 student logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from lmdistill.errors import UserError
from lmdistill.losses.logits import _check_unit_interval, _kl_from_log_probs, _log_mixture, _scaled, jsd_from_log_probs


@dataclass
class SparseTeacher:
    """A teacher distribution kept as top-k: log_probs (..., k) at temperature 1 (descending), token_ids (..., k)
    int, tail_log_mass (...) = log(1 − Σ exp(log_probs)), −inf when k = V."""

    log_probs: torch.Tensor
    token_ids: torch.Tensor
    tail_log_mass: torch.Tensor

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "SparseTeacher":
        """Apply ``fn`` to each tensor (slicing, ``.to(device)``, the task's causal alignment)."""
        return SparseTeacher(fn(self.log_probs), fn(self.token_ids), fn(self.tail_log_mass))


def sparse_from_logits(teacher_logits: torch.Tensor, top_k: int) -> SparseTeacher:
    """Top-k of log softmax(z_t) (T = 1) with the exact tail log-mass. (..., V) -> SparseTeacher (..., k).

    tail = logsumexp of the log-probs outside the top-k (accurate where 1 − Σ top-k would cancel).
    """
    vocab = teacher_logits.shape[-1]
    if not 1 <= top_k <= vocab:
        raise UserError(f"top_k={top_k} must be between 1 and the vocabulary size {vocab}")
    dtype = torch.float64 if teacher_logits.dtype == torch.float64 else torch.float32
    log_probs = torch.log_softmax(teacher_logits.to(dtype), dim=-1)
    top_values, top_ids = torch.topk(log_probs, top_k, dim=-1, sorted=True)
    if top_k == vocab:
        tail = torch.full(log_probs.shape[:-1], -math.inf, dtype=dtype, device=log_probs.device)
    else:
        tail = torch.logsumexp(log_probs.scatter(-1, top_ids, -math.inf), dim=-1)
    return SparseTeacher(top_values, top_ids.to(torch.int32), tail)


def _teacher_buckets(teacher: SparseTeacher, vocab: int, temperature: float, dtype) -> torch.Tensor:
    """log p_T over k + 1 buckets (k tokens, then the tail), renormalised. -> (..., k + 1)."""
    log_probs = teacher.log_probs.to(dtype) / temperature
    tail = teacher.tail_log_mass.to(dtype)
    rest = vocab - teacher.log_probs.shape[-1]
    if rest > 0 and temperature != 1.0:
        # The tail's shape is unknown: assume its mass m is spread evenly over its V - k tokens.
        tail = math.log(rest) + (tail - math.log(rest)) / temperature
    elif rest == 0:
        tail = torch.full_like(tail, -math.inf)
    buckets = torch.cat([log_probs, tail.unsqueeze(-1)], dim=-1)
    return buckets - torch.logsumexp(buckets, dim=-1, keepdim=True)


def _student_buckets(student_logits: torch.Tensor, token_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """log q_T over the same k + 1 buckets: q at the teacher's ids, then the rest of the vocabulary. -> (..., k + 1)."""
    dtype = torch.float64 if student_logits.dtype == torch.float64 else torch.float32
    log_q = torch.log_softmax(student_logits.to(dtype) / temperature, dim=-1)
    ids = token_ids.long()
    at_ids = log_q.gather(-1, ids)
    if ids.shape[-1] == log_q.shape[-1]:
        # An empty tail: logsumexp over all -inf would give a NaN gradient.
        tail = torch.full(at_ids.shape[:-1], -math.inf, dtype=dtype, device=log_q.device)
    else:
        tail = torch.logsumexp(log_q.scatter(-1, ids, -math.inf), dim=-1)
    return torch.cat([at_ids, tail.unsqueeze(-1)], dim=-1)


def _prepare(student_logits: torch.Tensor, teacher: SparseTeacher, temperature: float):
    if not float(temperature) > 0.0:
        raise UserError(f"distillation temperature={temperature} must be > 0; use 1.0 for plain softmax")
    k, vocab = teacher.log_probs.shape[-1], student_logits.shape[-1]
    if teacher.log_probs.shape[:-1] != student_logits.shape[:-1] or k > vocab:
        raise UserError(
            f"sparse teacher {tuple(teacher.log_probs.shape)} does not fit student logits {tuple(student_logits.shape)}; "
            "the cache must come from the same examples and a vocabulary no larger than the student's"
        )
    log_s = _student_buckets(student_logits, teacher.token_ids, float(temperature))
    log_t = _teacher_buckets(teacher, vocab, float(temperature), log_s.dtype)
    return log_s, log_t


def sparse_forward_kl(student_logits, teacher, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """Forward KL(p_t ‖ p_s) over the k + 1 buckets. (..., V), SparseTeacher (..., k) -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher, temperature)
    return _scaled(_kl_from_log_probs(log_t, log_s), temperature, scale_by_temperature_squared)


def sparse_reverse_kl(student_logits, teacher, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """Reverse KL(p_s ‖ p_t) over the k + 1 buckets. (..., V), SparseTeacher (..., k) -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher, temperature)
    return _scaled(_kl_from_log_probs(log_s, log_t), temperature, scale_by_temperature_squared)


def sparse_jsd(student_logits, teacher, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True, beta: float = 0.5):
    """Generalized JSD over the buckets: β·KL(p_t ‖ m) + (1−β)·KL(p_s ‖ m), m = β·p_t + (1−β)·p_s; β = 0 is forward
    KL and β = 1 reverse KL exactly (as the live :func:`~lmdistill.losses.logits.jsd`). -> (...)."""
    _check_unit_interval("beta", beta)
    log_s, log_t = _prepare(student_logits, teacher, temperature)
    return _scaled(jsd_from_log_probs(log_s, log_t, beta), temperature, scale_by_temperature_squared)


def sparse_symmetric_kl(student_logits, teacher, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """KL(p_t ‖ p_s) + KL(p_s ‖ p_t) over the buckets. -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher, temperature)
    loss = _kl_from_log_probs(log_t, log_s) + _kl_from_log_probs(log_s, log_t)
    return _scaled(loss, temperature, scale_by_temperature_squared)


def sparse_tvd(student_logits, teacher, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """½·Σ |p_t − p_s| over the buckets (a lower bound of the full TVD for k < V). -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher, temperature)
    return _scaled(0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1), temperature, scale_by_temperature_squared)


def sparse_skew_forward_kl(student_logits, teacher, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True, alpha: float = 0.1):
    """KL(p_t ‖ α·p_t + (1−α)·p_s) over the buckets (DistiLLM). -> (...)."""
    _check_unit_interval("alpha", alpha)
    log_s, log_t = _prepare(student_logits, teacher, temperature)
    return _scaled(_kl_from_log_probs(log_t, _log_mixture(alpha, log_t, log_s)), temperature, scale_by_temperature_squared)


def sparse_skew_reverse_kl(student_logits, teacher, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True, alpha: float = 0.1):
    """KL(p_s ‖ α·p_s + (1−α)·p_t) over the buckets (DistiLLM). -> (...)."""
    _check_unit_interval("alpha", alpha)
    log_s, log_t = _prepare(student_logits, teacher, temperature)
    return _scaled(_kl_from_log_probs(log_s, _log_mixture(alpha, log_s, log_t)), temperature, scale_by_temperature_squared)


def sparse_soft_ce(student_logits, teacher, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """Soft cross-entropy −Σ p_t·log p_s over the buckets, with 0·log 0 = 0. -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher, temperature)
    p_t = log_t.exp()
    loss = -(p_t * torch.where(p_t == 0, torch.zeros_like(log_s), log_s)).sum(-1)
    return _scaled(loss, temperature, scale_by_temperature_squared)


# Registered ``logits`` loss name -> its sparse version (same parameters).
SPARSE_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": sparse_forward_kl,
    "reverse_kl": sparse_reverse_kl,
    "jsd": sparse_jsd,
    "symmetric_kl": sparse_symmetric_kl,
    "tvd": sparse_tvd,
    "skew_forward_kl": sparse_skew_forward_kl,
    "skew_reverse_kl": sparse_skew_reverse_kl,
    "soft_ce": sparse_soft_ce,
}


def sparse_version(name: str) -> Callable[..., torch.Tensor]:
    """The sparse version of the registered logits loss ``name``; UserError when a cache cannot serve it."""
    if name not in SPARSE_LOSSES:
        raise UserError(
            f"loss {name!r} needs the teacher's full logits, which a teacher cache does not hold; use one of "
            f"{', '.join(sorted(SPARSE_LOSSES))} or a live teacher (teacher.path / teacher.config)"
        )
    return SPARSE_LOSSES[name]
