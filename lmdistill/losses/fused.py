"""Fused large-vocabulary logit distillation: divergence from hidden states and lm_head weights, never (N × V).

Tokens are processed in chunks; for each chunk the student logits z_s = c·(h_s W_sᵀ + b_s) (and the teacher's) are
computed, the divergence and its analytic gradient d loss / d z_s are formed row block by row block while the
(rows × V) tiles sit in cache, and d loss / d h_s = G·W_s (and dW_s += Gᵀ·h_s, db_s += ΣG) are computed at once.
Backward only multiplies the stored gradients by grad_output (FORMULAS.md "Fused large-vocabulary losses").
"""

from __future__ import annotations

import torch

from lmdistill.errors import UserError
from lmdistill.losses.fused_chunks import FusedOptions, TeacherSignal, fused_forward
from lmdistill.losses.fused_kernels import KERNELS, autograd_kernel
from lmdistill.losses.registry import spec, validate_params

_LOSS_ARGUMENTS = {"temperature", "scale_by_temperature_squared"}


class _FusedLinearDivergence(torch.autograd.Function):
    """Loss computed with its gradients in forward; backward scales the stored gradients by grad_output."""

    @staticmethod
    def forward(ctx, student_hidden, student_weight, student_bias, teacher: TeacherSignal, options: FusedOptions):
        loss, grad_hidden, grad_weight, grad_bias = fused_forward(
            student_hidden, student_weight, student_bias, teacher, options
        )
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        scaled = [None if grad is None else grad * grad_output.to(grad.dtype) for grad in ctx.saved_tensors]
        return *scaled, None, None


def fused_linear_divergence(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    *,
    teacher_logits: torch.Tensor | None = None,
    teacher_log_probs: torch.Tensor | None = None,
    divergence: str = "forward_kl",
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = True,
    mask: torch.Tensor | None = None,
    num_valid: torch.Tensor | float | None = None,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    logit_softcap: float | None = None,
    chunk_tokens: int | None = None,
    memory_budget_bytes: int = 640 * 2**20,
    **params: float,
) -> torch.Tensor:
    """Masked-mean logit divergence between student and teacher, computed from the student's hidden states.

    Shapes: ``student_hidden`` (N, H_s) or (B, S, H_s); ``student_weight`` (V, H_s); the teacher either as
    ``teacher_hidden`` (N, H_t) + ``teacher_weight`` (V, H_t), or ``teacher_logits`` (N, V), or
    ``teacher_log_probs`` (N, V) = log softmax(z_t / T) used as is; ``mask`` (N,) or (B, S).
    Logits made here from hidden states: z = softcap(logit_scale · (h Wᵀ + b)), softcap(x) = cap · tanh(x / cap);
    ``teacher_logits`` are the teacher model's final outputs (scale and softcap already in them), divided by T.
    Returns ``reduce(get(divergence)(z_s, z_t, temperature=T, ...), mask, num_valid=num_valid)``, a scalar in the
    student hidden states' dtype (under autocast the logits are made in autocast's dtype, as a linear layer's are);
    gradients reach student_hidden, student_weight and student_bias only, never the teacher.
    Peak extra memory is about ``memory_budget_bytes`` (chunk of tokens × V tiles) plus O(N·H + V·H).
    """
    device_type = student_hidden.device.type
    loss_dtype = student_hidden.dtype
    if torch.is_autocast_enabled(device_type):
        # Under autocast the tiles are made as autocast makes a linear layer's output: in its dtype (the casts are
        # differentiable, so gradients return in the inputs' dtypes); the loss stays in the hidden states' dtype.
        half = torch.get_autocast_dtype(device_type)
        student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias = (
            None if tensor is None else tensor.to(half)
            for tensor in (student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias)
        )
    options = _options(
        student_hidden, student_weight, student_bias, divergence, temperature, scale_by_temperature_squared,
        num_valid, logit_scale, logit_softcap, chunk_tokens, memory_budget_bytes, params, loss_dtype,
    )
    teacher = _teacher(student_hidden, student_weight, teacher_hidden, teacher_weight, teacher_bias,
                       teacher_logits, teacher_log_probs, mask)
    flat_hidden = student_hidden.reshape(-1, student_hidden.shape[-1])
    with torch.autocast(device_type, enabled=False):
        return _FusedLinearDivergence.apply(flat_hidden, student_weight, student_bias, teacher, options)


def _options(student_hidden, student_weight, student_bias, divergence, temperature, scale_by_temperature_squared,
             num_valid, logit_scale, logit_softcap, chunk_tokens, memory_budget_bytes, params,
             loss_dtype: torch.dtype) -> FusedOptions:
    loss_spec = spec(divergence)
    if loss_spec.kind != "logits":
        raise UserError(f"loss {divergence!r} is a {loss_spec.kind} loss; the fused loss takes a logit divergence")
    validate_params(divergence, params)
    resolved = {name: value for name, value in loss_spec.params.items() if name not in _LOSS_ARGUMENTS}
    resolved.update(params)
    for name in ("alpha", "beta", "mu"):
        if name in resolved and not 0.0 <= float(resolved[name]) <= 1.0:
            raise UserError(f"loss parameter {name}={resolved[name]} is outside [0, 1]; set it between 0 and 1")
    if not float(temperature) > 0.0:
        raise UserError(f"distillation temperature={temperature} must be > 0; use 1.0 for plain softmax")
    if logit_softcap is not None and not float(logit_softcap) > 0.0:
        raise UserError(f"logit_softcap={logit_softcap} must be > 0 (or None to disable softcapping)")
    if chunk_tokens is not None and int(chunk_tokens) < 1:
        raise UserError(f"chunk_tokens={chunk_tokens} must be >= 1 (or None to derive it from memory_budget_bytes)")
    if student_hidden.dtype != student_weight.dtype:
        raise UserError(
            f"student_hidden is {student_hidden.dtype} but student_weight is {student_weight.dtype}; "
            "cast one to the other"
        )
    grad_enabled = torch.is_grad_enabled()
    return FusedOptions(
        kernel=KERNELS.get(divergence) or autograd_kernel(loss_spec.fn),
        params=resolved,
        temperature=float(temperature),
        scale_by_temperature_squared=bool(scale_by_temperature_squared),
        num_valid=None if num_valid is None else float(num_valid),
        logit_scale=float(logit_scale),
        logit_softcap=None if logit_softcap is None else float(logit_softcap),
        chunk_tokens=None if chunk_tokens is None else int(chunk_tokens),
        memory_budget_bytes=int(memory_budget_bytes),
        need_hidden_grad=grad_enabled and student_hidden.requires_grad,
        need_weight_grad=grad_enabled and student_weight.requires_grad,
        need_bias_grad=grad_enabled and student_bias is not None and student_bias.requires_grad,
        loss_dtype=loss_dtype,
    )


def _teacher(student_hidden, student_weight, teacher_hidden, teacher_weight, teacher_bias, teacher_logits,
             teacher_log_probs, mask) -> TeacherSignal:
    given = [teacher_hidden is not None or teacher_weight is not None, teacher_logits is not None,
             teacher_log_probs is not None]
    if sum(given) != 1:
        raise UserError(
            "give the teacher exactly one way: teacher_hidden + teacher_weight, teacher_logits, or teacher_log_probs"
        )
    num_tokens = student_hidden.numel() // student_hidden.shape[-1]
    vocab_size = student_weight.shape[0]
    if teacher_hidden is not None or teacher_weight is not None:
        if teacher_hidden is None or teacher_weight is None:
            raise UserError("teacher_hidden and teacher_weight go together; pass both (or teacher_logits instead)")
        if teacher_weight.shape[0] != vocab_size or teacher_hidden.shape[-1] != teacher_weight.shape[-1]:
            raise UserError(
                f"teacher_weight {tuple(teacher_weight.shape)} does not fit teacher_hidden "
                f"{tuple(teacher_hidden.shape)} and vocabulary {vocab_size}; pass the teacher's lm_head weight (V, H_t)"
            )
        rows = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
        signal = TeacherSignal(hidden=rows, weight=teacher_weight.detach(),
                               bias=None if teacher_bias is None else teacher_bias.detach())
    else:
        source = teacher_logits if teacher_logits is not None else teacher_log_probs
        if source.shape[-1] != vocab_size:
            raise UserError(
                f"teacher logits have {source.shape[-1]} classes but the student vocabulary has {vocab_size}; "
                "student and teacher must share the tokenizer"
            )
        rows = source.detach().reshape(-1, vocab_size)
        signal = TeacherSignal(logits=rows, is_log_probs=teacher_log_probs is not None)
    if rows.shape[0] != num_tokens:
        raise UserError(f"the teacher has {rows.shape[0]} positions but the student has {num_tokens}; align them")
    if mask is not None:
        if mask.numel() != num_tokens:
            raise UserError(f"mask has {mask.numel()} positions but the student has {num_tokens}; pass one per token")
        signal.valid_rows = mask.reshape(-1).to(torch.bool).nonzero().squeeze(1)
    return signal


__all__ = ["fused_linear_divergence"]
