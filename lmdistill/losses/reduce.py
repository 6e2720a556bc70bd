"""The only place that masks and normalises per-position losses."""

from __future__ import annotations

import torch

# Label value for positions outside the loss (the Hugging Face and PyTorch convention); the one definition.
IGNORE_INDEX = -100


def reduce(
    per_position: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    num_valid: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Masked mean: sum of ``per_position`` over valid positions divided by the number of valid positions.

    Shapes: ``per_position`` (...), ``mask`` (...) of bool or {0, 1} (None: all positions valid).
    ``num_valid`` overrides the denominator with the count over the *global* batch (all accumulation steps and
    processes) so that splitting a batch does not change the loss or its gradients. An all-masked batch gives 0.
    Masked positions are selected with ``where``, so a NaN or inf there cannot leak into the result.
    """
    if mask is None:
        total = per_position.sum()
        count = per_position.numel()
    else:
        mask = mask.to(torch.bool)
        total = torch.where(mask, per_position, torch.zeros((), dtype=per_position.dtype, device=per_position.device)).sum()
        count = mask.sum()
    denominator = count if num_valid is None else num_valid
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(per_position.dtype).clamp(min=1)
    else:
        denominator = max(float(denominator), 1.0)
    return total / denominator
