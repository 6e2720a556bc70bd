"""Losses between relations of positions within a sequence (TextBrewer's MMD-style hidden-state similarity).

Unlike the per-position losses in ``hidden.py``, a relation compares every pair of positions, so padding must be
excluded on the key side too: ``key_mask`` (B, S) bool, True = real token, is supplied by the caller.
"""

from __future__ import annotations

import torch

from lmdistill.errors import UserError
from lmdistill.losses.registration import register


@register("hidden_mmd", "hidden")
def hidden_mmd(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, *, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Hidden-state similarity MSE (TextBrewer ``mmd_loss`` on one layer): (B, S, H_s), (B, S, H_t) -> (B, S).

    G = H·Hᵀ / d per sequence (d = that side's width, so the widths may differ); per query position i:
    mean over valid keys j of (G_s[i, j] − G_t[i, j])². Padded keys are left out of the mean (all keys masked: 0).
    """
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1] or student_hidden.dim() != 3:
        raise UserError(
            f"hidden_mmd needs (batch, sequence, width) states with the same batch and sequence, got "
            f"{tuple(student_hidden.shape)} and {tuple(teacher_hidden.shape)}; feed both models the same tokens"
        )
    dtype = torch.float64 if student_hidden.dtype == torch.float64 else torch.float32
    h_s, h_t = student_hidden.to(dtype), teacher_hidden.to(dtype)
    gram_student = h_s @ h_s.transpose(1, 2) / h_s.shape[-1]
    gram_teacher = h_t @ h_t.transpose(1, 2) / h_t.shape[-1]
    squared = (gram_student - gram_teacher).pow(2)  # (B, S, S)
    if key_mask is None:
        return squared.mean(-1)
    keys = key_mask.to(torch.bool)[:, None, :]
    total = torch.where(keys, squared, torch.zeros_like(squared)).sum(-1)
    return total / keys.sum(-1).clamp(min=1).to(dtype)
