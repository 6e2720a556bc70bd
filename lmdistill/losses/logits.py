"""Per-position losses between student and teacher logits (and the hard-label cross-entropy).

Every ``logits`` loss takes (..., V) student and teacher logits and returns (...) values, never reduced.
p_t = softmax(z_t / T) is the teacher distribution, p_s = softmax(z_s / T) the student's; with
``scale_by_temperature_squared`` the result is multiplied by T² (Hinton et al. 2015) so gradients keep their scale.
Math runs in float32 (float64 for float64 inputs). The teacher is not detached here: callers detach it.
Logits of -inf (masked vocabulary entries) follow 0·log 0 = 0 and never produce NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lmdistill.errors import UserError
from lmdistill.losses.reduce import IGNORE_INDEX
from lmdistill.losses.registration import register


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise UserError(f"loss parameter {name}={value} is outside [0, 1]; set it to a value between 0 and 1")


def _check_inputs(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> None:
    if not float(temperature) > 0.0:
        raise UserError(f"distillation temperature={temperature} must be > 0; use 1.0 for plain softmax")
    if student_logits.shape != teacher_logits.shape:
        raise UserError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ "
            "in shape; student and teacher must share the tokenizer and vocabulary size"
        )


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) over the last axis, in the compute dtype: (..., V) -> (..., V)."""
    return torch.log_softmax(logits.to(_compute_dtype(logits)) / temperature, dim=-1)


def _kl_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ p·(log p − log q) from log-probabilities, with 0·log 0 = 0: (..., V) -> (...)."""
    p = log_p.exp()
    # where() before the product: with log p = log q = -inf the difference is NaN, and its gradient must not be.
    log_ratio = torch.where(p == 0, torch.zeros_like(log_p), log_p - log_q)
    return (p * log_ratio).sum(-1)


def _log_mixture(weight_p: float, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """log(w·p + (1 − w)·q) by logsumexp, safe where both are 0 (log = -inf): (..., V) -> (..., V)."""
    if weight_p == 1:
        return log_p
    if weight_p == 0:
        return log_q
    stacked = torch.stack([log_p + math.log(weight_p), log_q + math.log1p(-weight_p)])
    both_zero = (log_p == -math.inf) & (log_q == -math.inf)
    # logsumexp's gradient over an all -inf pair is NaN; feed zeros there and put -inf back afterwards.
    safe = torch.logsumexp(torch.where(both_zero, torch.zeros_like(stacked), stacked), dim=0)
    return torch.where(both_zero, torch.full_like(safe, -math.inf), safe)


def _scaled(loss: torch.Tensor, temperature: float, scale_by_temperature_squared: bool) -> torch.Tensor:
    return loss * float(temperature) ** 2 if scale_by_temperature_squared else loss


def _prepare(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    _check_inputs(student_logits, teacher_logits, temperature)
    return _log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)


@register("forward_kl", "logits")
def forward_kl(student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """Forward KL(p_t ‖ p_s), mean-seeking (Hinton et al. 2015). (..., V) -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher_logits, temperature)
    return _scaled(_kl_from_log_probs(log_t, log_s), temperature, scale_by_temperature_squared)


@register("reverse_kl", "logits")
def reverse_kl(student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """Reverse KL(p_s ‖ p_t), mode-seeking (MiniLLM). (..., V) -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher_logits, temperature)
    return _scaled(_kl_from_log_probs(log_s, log_t), temperature, scale_by_temperature_squared)


def jsd_from_log_probs(log_s: torch.Tensor, log_t: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalized JSD from log-probabilities over the last axis (shared by the live and the cached-teacher loss)."""
    if beta == 0:
        return _kl_from_log_probs(log_t, log_s)
    if beta == 1:
        return _kl_from_log_probs(log_s, log_t)
    log_m = _log_mixture(beta, log_t, log_s)
    return beta * _kl_from_log_probs(log_t, log_m) + (1 - beta) * _kl_from_log_probs(log_s, log_m)


@register("jsd", "logits")
def jsd(
    student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True,
    beta: float = 0.5,
):
    """Generalized JSD (GKD): β·KL(p_t ‖ m) + (1−β)·KL(p_s ‖ m), m = β·p_t + (1−β)·p_s. (..., V) -> (...).

    As in TRL's ``generalized_jsd_loss``, β = 0 is defined as exactly forward KL and β = 1 as exactly reverse KL
    (the formula itself tends to 0 at both ends).
    """
    _check_unit_interval("beta", beta)
    log_s, log_t = _prepare(student_logits, teacher_logits, temperature)
    return _scaled(jsd_from_log_probs(log_s, log_t, beta), temperature, scale_by_temperature_squared)


@register("symmetric_kl", "logits")
def symmetric_kl(
    student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True
):
    """Symmetric KL: KL(p_t ‖ p_s) + KL(p_s ‖ p_t) (the sum, not the mean). (..., V) -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher_logits, temperature)
    loss = _kl_from_log_probs(log_t, log_s) + _kl_from_log_probs(log_s, log_t)
    return _scaled(loss, temperature, scale_by_temperature_squared)


@register("tvd", "logits")
def tvd(student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """Total variation distance: ½·Σ |p_t − p_s|. (..., V) -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher_logits, temperature)
    loss = 0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1)
    return _scaled(loss, temperature, scale_by_temperature_squared)


@register("skew_forward_kl", "logits")
def skew_forward_kl(
    student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True,
    alpha: float = 0.1,
):
    """Skew forward KL (DistiLLM): KL(p_t ‖ α·p_t + (1−α)·p_s). (..., V) -> (...)."""
    _check_unit_interval("alpha", alpha)
    log_s, log_t = _prepare(student_logits, teacher_logits, temperature)
    loss = _kl_from_log_probs(log_t, _log_mixture(alpha, log_t, log_s))
    return _scaled(loss, temperature, scale_by_temperature_squared)


@register("skew_reverse_kl", "logits")
def skew_reverse_kl(
    student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True,
    alpha: float = 0.1,
):
    """Skew reverse KL (DistiLLM): KL(p_s ‖ α·p_s + (1−α)·p_t). (..., V) -> (...)."""
    _check_unit_interval("alpha", alpha)
    log_s, log_t = _prepare(student_logits, teacher_logits, temperature)
    loss = _kl_from_log_probs(log_s, _log_mixture(alpha, log_s, log_t))
    return _scaled(loss, temperature, scale_by_temperature_squared)


@register("adaptive_kl", "logits")
def adaptive_kl(
    student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True,
    mu: float = 0.5,
):
    """Adaptive KL (Wu et al. 2024): g_H/(g_H+g_T)·KL(p_t ‖ p_s) + g_T/(g_H+g_T)·KL(p_s ‖ p_t). (..., V) -> (...).

    Head H = the fewest tokens, by descending p_t, whose cumulative p_t reaches μ; g_H = Σ_H |p_t − p_s|,
    g_T = the same sum over the tail. The weights use a detached p_s, as in the authors' code (they are gates,
    not a path for gradients). Unlike that code, the token that crosses μ belongs to the head, per the definition.
    Identical distributions (g_H + g_T = 0) give 0.
    """
    _check_unit_interval("mu", mu)
    log_s, log_t = _prepare(student_logits, teacher_logits, temperature)
    p_t, p_s = log_t.exp(), log_s.detach().exp()
    sorted_p_t, order = torch.sort(p_t, dim=-1, descending=True, stable=True)
    # A token is in the head when the mass strictly before it has not yet reached μ.
    in_head = (torch.cumsum(sorted_p_t, dim=-1) - sorted_p_t) < mu
    gaps = (sorted_p_t - p_s.gather(-1, order)).abs()
    gap_head = torch.where(in_head, gaps, torch.zeros_like(gaps)).sum(-1)
    gap_tail = torch.where(in_head, torch.zeros_like(gaps), gaps).sum(-1)
    total = gap_head + gap_tail
    safe_total = torch.where(total > 0, total, torch.ones_like(total))
    head_weight = torch.where(total > 0, gap_head / safe_total, torch.zeros_like(total))
    tail_weight = torch.where(total > 0, gap_tail / safe_total, torch.zeros_like(total))
    loss = head_weight * _kl_from_log_probs(log_t, log_s) + tail_weight * _kl_from_log_probs(log_s, log_t)
    return _scaled(loss, temperature, scale_by_temperature_squared)


@register("soft_ce", "logits")
def soft_ce(student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """Soft cross-entropy: −Σ p_t·log p_s (= KL(p_t ‖ p_s) + H(p_t)), with 0·log 0 = 0. (..., V) -> (...)."""
    log_s, log_t = _prepare(student_logits, teacher_logits, temperature)
    p_t = log_t.exp()
    safe_log_s = torch.where(p_t == 0, torch.zeros_like(log_s), log_s)
    loss = -(p_t * safe_log_s).sum(-1)
    return _scaled(loss, temperature, scale_by_temperature_squared)


def _scaled_logit_pair(student_logits, teacher_logits, temperature):
    """z/T for both sides, with entries that are -inf on both sides (masked vocabulary) set to 0 on both."""
    _check_inputs(student_logits, teacher_logits, temperature)
    dtype = _compute_dtype(student_logits)
    z_s, z_t = student_logits.to(dtype) / temperature, teacher_logits.to(dtype) / temperature
    both_masked = (z_s == -math.inf) & (z_t == -math.inf)
    zero = torch.zeros((), dtype=dtype, device=z_s.device)
    return torch.where(both_masked, zero, z_s), torch.where(both_masked, zero, z_t)


@register("logit_mse", "logits")
def logit_mse(student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True):
    """Logit MSE: mean over V of (z_s/T − z_t/T)²; entries -inf on both sides count as 0. (..., V) -> (...)."""
    z_s, z_t = _scaled_logit_pair(student_logits, teacher_logits, temperature)
    return _scaled((z_s - z_t).pow(2).mean(-1), temperature, scale_by_temperature_squared)


@register("logit_cosine", "logits")
def logit_cosine(
    student_logits, teacher_logits, *, temperature: float = 1.0, scale_by_temperature_squared: bool = True
):
    """Logit cosine distance: 1 − cos(z_s, z_t) over V (T cancels except in the T² factor). (..., V) -> (...)."""
    z_s, z_t = _scaled_logit_pair(student_logits, teacher_logits, temperature)
    loss = 1.0 - F.cosine_similarity(z_s, z_t, dim=-1, eps=1e-8)
    return _scaled(loss, temperature, scale_by_temperature_squared)


@register("ce", "labels")
def ce(student_logits, labels, *, ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0):
    """Hard-label cross-entropy per position; ignored labels give 0. (..., V) and (...) -> (...)."""
    _check_unit_interval("label_smoothing", label_smoothing)
    if student_logits.shape[:-1] != labels.shape:
        raise UserError(
            f"labels {tuple(labels.shape)} do not match student logits {tuple(student_logits.shape)}; "
            "labels need the logits' shape without the vocabulary axis"
        )
    flat_logits = student_logits.reshape(-1, student_logits.shape[-1]).to(_compute_dtype(student_logits))
    loss = F.cross_entropy(
        flat_logits, labels.reshape(-1).long(), ignore_index=ignore_index, label_smoothing=label_smoothing,
        reduction="none",
    )
    return loss.reshape(labels.shape)
