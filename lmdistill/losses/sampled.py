"""Losses on the student's own sampled tokens (on-policy distillation), from each model's log-probability of them.

A ``tokens`` loss takes ``student_token_log_probs`` and ``teacher_token_log_probs`` (...), the log-probability each
model gives the target token at each position, and returns (...) values, never reduced. Unlike a ``logits`` loss it
reads one token per position, so it is only meaningful where that token was drawn from the student (on-policy
batches, ``batches: samples``).
"""

from __future__ import annotations

import torch

from lmdistill.losses.reduce import IGNORE_INDEX
from lmdistill.losses.registration import register


def target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per position, in float32 (float64 for float64 logits): (..., V), (...) -> (...).

    Positions whose target is ``IGNORE_INDEX`` get the value of token 0 (callers mask them)."""
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    log_probs = torch.log_softmax(logits.to(dtype), dim=-1)
    index = targets.clamp(min=0).unsqueeze(-1)
    return log_probs.gather(-1, index).squeeze(-1)


@register("token_reverse_kl", "tokens")
def token_reverse_kl(student_token_log_probs: torch.Tensor, teacher_token_log_probs: torch.Tensor) -> torch.Tensor:
    """Per-token reverse KL on the student's samples: δ = log p_s(y) − log p_t(y), y ~ p_s. (...) -> (...).

    The value is δ, the one-sample estimate of KL(p_s ‖ p_t) at the position; the gradient is δ·∇log p_s(y), the
    score-function gradient of that KL (E_y~p_s[∇p_s/p_s] = 0 drops the other part), i.e. policy gradient with
    the teacher's log-probability of each sampled token as its reward and no credit to later tokens
    (on-policy distillation: Agarwal et al. 2024, Gu et al. 2024 "MiniLLM", Lu & Thinking Machines 2025).
    The teacher is not differentiated.
    """
    student = student_token_log_probs
    delta = (student - teacher_token_log_probs).detach()
    return delta + delta * (student - student.detach())


__all__ = ["IGNORE_INDEX", "target_log_probs", "token_reverse_kl"]
