"""Per-position losses between student and teacher hidden states of equal width.

Widths must already match: projecting a narrower student (TinyBERT's W_h) is the caller's job, so a loss stays a
pure function of two tensors. Math runs in float32 (float64 for float64 inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmdistill.errors import UserError
from lmdistill.losses.registration import register


def _matched(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if student_hidden.shape[-1] != teacher_hidden.shape[-1]:
        raise UserError(
            f"student hidden width {student_hidden.shape[-1]} differs from teacher width {teacher_hidden.shape[-1]}; "
            "add a projection from the student width to the teacher width for this hidden-state loss"
        )
    if student_hidden.shape != teacher_hidden.shape:
        raise UserError(
            f"student hidden states {tuple(student_hidden.shape)} and teacher hidden states "
            f"{tuple(teacher_hidden.shape)} differ in batch or sequence shape; feed both models the same tokens"
        )
    dtype = torch.float64 if student_hidden.dtype == torch.float64 else torch.float32
    return student_hidden.to(dtype), teacher_hidden.to(dtype)


@register("hidden_mse", "hidden")
def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Hidden-state MSE (TinyBERT): mean over H of (h_s − h_t)². (..., H) -> (...).

    A mean, not a sum: multiply by H to get the squared norm ‖h_s − h_t‖².
    """
    h_s, h_t = _matched(student_hidden, teacher_hidden)
    return (h_s - h_t).pow(2).mean(-1)


@register("hidden_cosine", "hidden")
def hidden_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Hidden-state cosine distance (DistilBERT): 1 − cos(h_s, h_t) over H. (..., H) -> (...)."""
    h_s, h_t = _matched(student_hidden, teacher_hidden)
    return 1.0 - F.cosine_similarity(h_s, h_t, dim=-1, eps=1e-8)
