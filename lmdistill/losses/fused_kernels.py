"""Per-row-block divergence kernels for the fused loss: loss per row and d loss / d student logits, analytically.

Every kernel works on a :class:`RowBlock` of r rows × V already at the distillation temperature (s = z_s / T,
t = z_t / T), with q = softmax(s), p = softmax(t), and returns ``(loss_rows, grad_factor)``:
``loss_rows`` (r,) is the divergence D per row and ``block.grad`` is filled with a tensor G such that
d D / d s = grad_factor · G. Scalar factors are returned instead of applied because the caller folds them, together
with T, the logit scale and 1/num_valid, into the small (chunk × H) products instead of one more (r × V) pass.

Gradients, with ⟨a, b⟩ = Σ_v a_v b_v and a generic D(q): dD/ds = q ⊙ (g − ⟨q, g⟩), g = dD/dq:
- forward KL   KL(p‖q):                 q − p
- reverse KL   KL(q‖p):                 q ⊙ (log q − log p − KL(q‖p))
- JSD(β)       m = βp + (1−β)q:         (1−β) · q ⊙ (log q − log m − KL(q‖m));  β=0: forward KL, β=1: reverse KL
- skew fwd(α)  r = αp + (1−α)q:         (1−α) · q ⊙ (⟨q, w⟩ − w),  w = p / r
- skew rev(α)  r = αq + (1−α)p:         q ⊙ (log(q/r) − αq/r − KL(q‖r) + α⟨q, q/r⟩)
- symmetric KL KL(p‖q) + KL(q‖p):       q − p + q ⊙ (log q − log p − KL(q‖p))
- TVD          ½ Σ|p − q|:              q ⊙ (g − ⟨q, g⟩),  g = ½ sign(q − p)
Mixtures are formed in log space (logaddexp) so that tokens where both p and q underflow stay finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class RowBlock:
    """Float32 (or float64) work buffers for r rows × V, all reused in place; shapes (r, V).

    On entry: ``student_logits`` = s, ``teacher_logits`` = t, ``student`` = log q, ``teacher`` = log p,
    ``student_probs`` = q, ``teacher_probs`` = p;
    ``scratch`` is free. On exit ``grad`` holds G (see the module docstring); the others are garbage.
    ``grad`` may alias the student's logits tile, which is no longer needed once ``student`` is filled.
    """

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor
    grad: torch.Tensor
    student: torch.Tensor
    teacher: torch.Tensor
    student_probs: torch.Tensor
    teacher_probs: torch.Tensor
    scratch: torch.Tensor


Kernel = Callable[..., "tuple[torch.Tensor, float]"]


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vecdot(a, b, dim=-1)


def forward_kl(block: RowBlock) -> tuple[torch.Tensor, float]:
    """KL(p‖q) = Σ p (log p − log q); G = q − p."""
    log_ratio = block.teacher.sub_(block.student)
    loss = _row_dot(block.teacher_probs, log_ratio)
    torch.sub(block.student_probs, block.teacher_probs, out=block.grad)
    return loss, 1.0


def soft_ce(block: RowBlock) -> tuple[torch.Tensor, float]:
    """−Σ p log q; G = q − p."""
    loss = -_row_dot(block.teacher_probs, block.student)
    torch.sub(block.student_probs, block.teacher_probs, out=block.grad)
    return loss, 1.0


def reverse_kl(block: RowBlock) -> tuple[torch.Tensor, float]:
    """KL(q‖p) = Σ q (log q − log p); G = q ⊙ (log q − log p − KL)."""
    log_ratio = torch.sub(block.student, block.teacher, out=block.teacher)
    loss = _row_dot(block.student_probs, log_ratio)
    torch.sub(log_ratio, loss[:, None], out=block.grad).mul_(block.student_probs)
    return loss, 1.0


def symmetric_kl(block: RowBlock) -> tuple[torch.Tensor, float]:
    """KL(p‖q) + KL(q‖p) = Σ (q − p)(log q − log p); G = q − p + q ⊙ (log q − log p − KL(q‖p))."""
    log_ratio = torch.sub(block.student, block.teacher, out=block.teacher)
    reverse = _row_dot(block.student_probs, log_ratio)
    forward = -_row_dot(block.teacher_probs, log_ratio)
    torch.sub(log_ratio, (reverse - 1.0)[:, None], out=block.grad)
    block.grad.mul_(block.student_probs).sub_(block.teacher_probs)
    return forward + reverse, 1.0


def tvd(block: RowBlock) -> tuple[torch.Tensor, float]:
    """½ Σ |p − q|; G = q ⊙ (sign(q − p) − ⟨q, sign(q − p)⟩), factor ½."""
    difference = torch.sub(block.student_probs, block.teacher_probs, out=block.scratch)
    loss = 0.5 * torch.linalg.vector_norm(difference, ord=1, dim=-1)
    sign = difference.sign_()
    mean_sign = _row_dot(block.student_probs, sign)
    torch.sub(sign, mean_sign[:, None], out=block.grad).mul_(block.student_probs)
    return loss, 0.5


def jsd(block: RowBlock, *, beta: float = 0.5) -> tuple[torch.Tensor, float]:
    """β KL(p‖m) + (1−β) KL(q‖m), m = βp + (1−β)q; G = q ⊙ (log q − log m − KL(q‖m)), factor 1 − β."""
    if beta == 0.0:
        return forward_kl(block)
    if beta == 1.0:
        return reverse_kl(block)
    # log m = log β + logaddexp(log p, log q + log((1−β)/β)), written as log β + L.
    log_beta = math.log(beta)
    shifted_student = torch.add(block.student, math.log((1.0 - beta) / beta), out=block.scratch)
    mixture = torch.logaddexp(block.teacher, shifted_student, out=block.scratch)
    teacher_minus = block.teacher.sub_(mixture)
    kl_teacher = _row_dot(block.teacher_probs, teacher_minus) - log_beta
    student_minus = block.student.sub_(mixture)
    kl_student = _row_dot(block.student_probs, student_minus) - log_beta
    torch.sub(student_minus, (kl_student + log_beta)[:, None], out=block.grad).mul_(block.student_probs)
    return beta * kl_teacher + (1.0 - beta) * kl_student, 1.0 - beta


def skew_forward_kl(block: RowBlock, *, alpha: float = 0.1) -> tuple[torch.Tensor, float]:
    """KL(p‖r), r = αp + (1−α)q; G = q ⊙ (⟨q, w'⟩ − w'), w' = αp/r, factor (1−α)/α."""
    if alpha == 0.0:
        return forward_kl(block)
    # log r = log α + L, L = logaddexp(log p, log q + log((1−α)/α)).
    log_alpha = math.log(alpha)
    shifted_student = block.student.add_(_log_odds(alpha))
    mixture = torch.logaddexp(block.teacher, shifted_student, out=block.scratch)
    log_weight = block.teacher.sub_(mixture)
    loss = _row_dot(block.teacher_probs, log_weight) - log_alpha
    weight = torch.exp(log_weight, out=block.scratch)
    mean_weight = _row_dot(block.student_probs, weight)
    torch.sub(mean_weight[:, None], weight, out=block.grad).mul_(block.student_probs)
    return loss, (1.0 - alpha) / alpha


def skew_reverse_kl(block: RowBlock, *, alpha: float = 0.1) -> tuple[torch.Tensor, float]:
    """KL(q‖r), r = αq + (1−α)p; G = q ⊙ (log(q/r) − αq/r − KL + α⟨q, q/r⟩)."""
    if alpha == 0.0:
        return reverse_kl(block)
    log_alpha = math.log(alpha)
    shifted_teacher = block.teacher.add_(_log_odds(alpha))
    mixture = torch.logaddexp(block.student, shifted_teacher, out=block.scratch)
    log_ratio = block.student.sub_(mixture)  # log(q/r) + log α
    loss = _row_dot(block.student_probs, log_ratio) - log_alpha
    scaled_ratio = torch.exp(log_ratio, out=block.teacher)  # α q / r
    mean_scaled_ratio = _row_dot(block.student_probs, scaled_ratio)
    grad = torch.sub(log_ratio, scaled_ratio, out=block.grad)
    grad.sub_((log_alpha + loss - mean_scaled_ratio)[:, None]).mul_(block.student_probs)
    return loss, 1.0


def _log_odds(alpha: float) -> float:
    return math.log1p(-alpha) - math.log(alpha) if alpha < 1.0 else -math.inf


def autograd_kernel(loss_fn: Callable[..., torch.Tensor]) -> Kernel:
    """A kernel for any registered logits loss without an analytic gradient: autograd on the (r × V) block only."""

    def kernel(block: RowBlock, **params: float) -> tuple[torch.Tensor, float]:
        with torch.enable_grad():
            student_logits = block.student_logits.detach().clone().requires_grad_(True)
            loss = loss_fn(
                student_logits, block.teacher_logits, temperature=1.0, scale_by_temperature_squared=False, **params
            )
            (grad,) = torch.autograd.grad(loss.sum(), student_logits)
        block.grad.copy_(grad)
        return loss.detach(), 1.0

    return kernel


KERNELS: dict[str, Kernel] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "soft_ce": soft_ce,
    "symmetric_kl": symmetric_kl,
    "tvd": tvd,
    "jsd": jsd,
    "skew_forward_kl": skew_forward_kl,
    "skew_reverse_kl": skew_reverse_kl,
}
