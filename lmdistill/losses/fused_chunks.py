"""The chunk loop of the fused loss: per token chunk, logits tiles -> row-block kernels -> gradients, in one pass.

Shapes: student_hidden (N, H_s), student_weight (V, H_s); teacher (N, H_t) + (V, H_t) or (N, V) rows.
Only valid rows (mask) are gathered, so masked positions cost nothing and cannot leak NaN into the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lmdistill.losses.fused_kernels import Kernel, RowBlock

# Row blocks of about this many bytes across all work buffers stay in L2/L3 between the elementwise passes, so
# only the matmul's output tile and the gradient tile travel to and from memory.
_BLOCK_CACHE_BYTES = 64 * 2**20  # ~40 rows at V=49k: fewer, larger elementwise ops (tiny blocks stall on busy cores)
_WORK_BUFFERS = 8
_RULED_OUT = torch.finfo(torch.float32).min / 2  # stands in for -inf teacher logits (see _process_block)


@dataclass(frozen=True)
class FusedOptions:
    """Everything but tensors that the fused loss needs; built and validated by ``fused_linear_divergence``."""

    kernel: Kernel
    params: dict[str, Any]
    temperature: float
    scale_by_temperature_squared: bool
    num_valid: float | None
    logit_scale: float
    logit_softcap: float | None
    chunk_tokens: int | None
    memory_budget_bytes: int
    need_hidden_grad: bool
    need_weight_grad: bool
    need_bias_grad: bool
    loss_dtype: torch.dtype  # the loss's dtype (the student hidden states' before any autocast cast)


@dataclass
class TeacherSignal:
    """The teacher, detached: hidden (N, H_t) + weight (V, H_t) [+ bias (V,)], or logits / log-probs (N, V)."""

    hidden: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    is_log_probs: bool = False
    valid_rows: torch.Tensor | None = field(default=None)


def even_chunk(num_rows: int, max_chunk: int) -> int:
    """Rows per chunk: as few chunks of at most ``max_chunk`` rows as cover ``num_rows``, all of equal size.

    Each matrix product repacks the whole (V × H) weight, so a small leftover chunk costs nearly as much as a full
    one; equal chunks keep every product as tall as the budget allows.
    """
    if num_rows <= 0:
        return 1
    max_chunk = max(1, min(int(max_chunk), num_rows))
    num_chunks = -(-num_rows // max_chunk)
    return -(-num_rows // num_chunks)


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _linear_tile(hidden, weight, bias, pre_scale: float, out: torch.Tensor) -> torch.Tensor:
    """out = pre_scale · (hidden Wᵀ + b); the scale goes on the small (chunk × H) side, not on the tile."""
    if pre_scale != 1.0:
        hidden = hidden * pre_scale
        bias = None if bias is None else bias * pre_scale
    if bias is None:
        return torch.mm(hidden, weight.t(), out=out)
    return torch.addmm(bias.to(out.dtype), hidden, weight.t(), out=out)


def fused_forward(student_hidden, student_weight, student_bias, teacher: TeacherSignal, options: FusedOptions):
    """Loss (scalar, student dtype) and its gradients w.r.t. hidden (N, H_s), weight (V, H_s), bias (V,) or None."""
    num_tokens, vocab_size = student_hidden.shape[0], student_weight.shape[0]
    compute_dtype = _compute_dtype(student_hidden)
    device = student_hidden.device
    rows = teacher.valid_rows
    num_rows = num_tokens if rows is None else rows.numel()
    denominator = max(float(num_rows if options.num_valid is None else options.num_valid), 1.0)
    temperature, softcap = options.temperature, options.logit_softcap
    loss_factor = temperature**2 if options.scale_by_temperature_squared else 1.0
    # z/T = pre_scale · (hW + b) without softcap; with it, tanh(pre_scale · (hW + b)) · cap / T.
    pre_scale = options.logit_scale / (temperature if softcap is None else softcap)

    grad_hidden = torch.zeros_like(student_hidden) if options.need_hidden_grad else None
    grad_weight = (
        torch.zeros(student_weight.shape, dtype=compute_dtype, device=device) if options.need_weight_grad else None
    )
    grad_bias = torch.zeros(vocab_size, dtype=compute_dtype, device=device) if options.need_bias_grad else None
    loss_sum = torch.zeros((), dtype=compute_dtype, device=device)

    from_hidden = teacher.hidden is not None
    itemsize = student_hidden.element_size()
    tile_bytes_per_token = (2 if from_hidden else 1) * vocab_size * itemsize
    chunk = even_chunk(num_rows, options.chunk_tokens or options.memory_budget_bytes // tile_bytes_per_token)
    block_rows = max(1, min(chunk, _BLOCK_CACHE_BYTES // (_WORK_BUFFERS * vocab_size * 4)))
    student_tile = torch.empty(chunk, vocab_size, dtype=student_hidden.dtype, device=device)
    teacher_tile = torch.empty(chunk, vocab_size, dtype=teacher.weight.dtype, device=device) if from_hidden else None
    work = _WorkBuffers(block_rows, vocab_size, compute_dtype, device, softcap is not None)
    grad_factor = 1.0
    weight_product = (
        torch.empty(student_weight.shape, dtype=student_weight.dtype, device=device)
        if options.need_weight_grad and student_weight.dtype != compute_dtype else None
    )

    for start in range(0, num_rows, chunk):
        end = min(start + chunk, num_rows)
        row_index = None if rows is None else rows[start:end]
        hidden = student_hidden[start:end] if rows is None else student_hidden.index_select(0, row_index)
        tile = _linear_tile(hidden, student_weight, student_bias, pre_scale, student_tile[: end - start])
        if from_hidden:
            teacher_rows = teacher.hidden[start:end] if rows is None else teacher.hidden.index_select(0, row_index)
            teacher_logits_tile = _linear_tile(
                teacher_rows, teacher.weight, teacher.bias, pre_scale, teacher_tile[: end - start]
            )
        for block_start in range(0, end - start, block_rows):
            block_end = min(block_start + block_rows, end - start)
            if from_hidden:
                teacher_block = teacher_logits_tile[block_start:block_end]
            elif rows is None:
                teacher_block = teacher.logits[start + block_start : start + block_end]
            else:
                teacher_block = teacher.logits.index_select(0, row_index[block_start:block_end])
            block_loss, grad_factor = _process_block(
                tile[block_start:block_end], teacher_block, teacher, work, options, pre_scale
            )
            loss_sum += block_loss

        # d loss / d (h Wᵀ + b) = factor · G: T² (or 1) · kernel factor · pre-softcap scale / num_valid.
        factor = loss_factor * grad_factor * options.logit_scale / temperature / denominator
        if grad_hidden is not None:
            chunk_grad = torch.mm(tile, student_weight).mul_(factor)
            if rows is None:
                grad_hidden[start:end] = chunk_grad
            else:
                grad_hidden.index_copy_(0, row_index, chunk_grad)
        if grad_weight is not None:
            if weight_product is None:
                grad_weight.addmm_(tile.t(), hidden, alpha=factor)
            else:
                grad_weight.add_(torch.mm(tile.t(), hidden, out=weight_product), alpha=factor)
        if grad_bias is not None:
            grad_bias.add_(tile.sum(0, dtype=compute_dtype), alpha=factor)

    loss = (loss_sum * (loss_factor / denominator)).to(options.loss_dtype)
    grad_weight = None if grad_weight is None else grad_weight.to(student_weight.dtype)
    grad_bias = None if grad_bias is None else grad_bias.to(student_bias.dtype)
    return loss, grad_hidden, grad_weight, grad_bias


class _WorkBuffers:
    """Preallocated (block_rows, V) buffers; fresh per-block allocations of this size would page-fault every time."""

    def __init__(self, block_rows: int, vocab_size: int, dtype: torch.dtype, device, with_softcap: bool):
        def make():
            return torch.empty(block_rows, vocab_size, dtype=dtype, device=device)

        self.dtype = dtype
        self.student_log_probs, self.teacher_log_probs = make(), make()
        self.student_probs, self.teacher_probs, self.scratch = make(), make(), make()
        self.student_logits, self.teacher_logits = make(), make()
        self.softcap_derivative = make() if with_softcap else None


def _process_block(student_in, teacher_in, teacher: TeacherSignal, work: _WorkBuffers, options, pre_scale):
    """Fill ``student_in`` (r, V) with G = d D / d (pre-softcap logits) up to a factor; return (Σ D, factor)."""
    rows = student_in.shape[0]
    softcap, temperature = options.logit_softcap, options.temperature
    student_logits = student_in if student_in.dtype == work.dtype else work.student_logits[:rows].copy_(student_in)
    derivative = None
    if softcap is not None:
        capped = student_logits.tanh_()
        derivative = torch.mul(capped, capped, out=work.softcap_derivative[:rows]).neg_().add_(1.0)
        capped.mul_(softcap / temperature)

    if teacher.logits is None:
        teacher_logits = teacher_in if teacher_in.dtype == work.dtype else work.teacher_logits[:rows].copy_(teacher_in)
    elif teacher.is_log_probs:
        teacher_logits = work.teacher_logits[:rows].copy_(teacher_in)
    else:
        # Given teacher logits are the model's final outputs: logit scale and softcap are already in them.
        teacher_logits = torch.mul(teacher_in, 1.0 / temperature, out=work.teacher_logits[:rows])
    if teacher.logits is not None:
        # A given teacher may rule tokens out with -inf (masked vocabularies, zero-probability log-probs). A huge
        # finite value gives the same p = 0 after the softmax but keeps 0 · log p at 0 instead of NaN, as the
        # unfused losses do; a divergence that is infinite there (reverse KL) stays infinite or overflows to inf.
        teacher_logits.clamp_min_(_RULED_OUT)
    if softcap is not None and teacher.logits is None:
        teacher_logits.tanh_().mul_(softcap / temperature)

    student_log_probs = torch.ops.aten._log_softmax.out(student_logits, -1, False, out=work.student_log_probs[:rows])
    if teacher.is_log_probs:
        teacher_log_probs = teacher_logits
    else:
        teacher_log_probs = torch.ops.aten._log_softmax.out(
            teacher_logits, -1, False, out=work.teacher_log_probs[:rows]
        )
    block = RowBlock(
        student_logits=student_logits,
        teacher_logits=teacher_logits,
        grad=student_logits,
        student=student_log_probs,
        teacher=teacher_log_probs,
        student_probs=torch.exp(student_log_probs, out=work.student_probs[:rows]),
        teacher_probs=torch.exp(teacher_log_probs, out=work.teacher_probs[:rows]),
        scratch=work.scratch[:rows],
    )
    loss_rows, grad_factor = options.kernel(block, **options.params)
    if derivative is not None:
        block.grad.mul_(derivative)
    if block.grad is not student_in:
        student_in.copy_(block.grad)
    return loss_rows.sum(), grad_factor
