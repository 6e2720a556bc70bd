"""Hard-label cross-entropy from hidden states and the lm_head, chunk by chunk (large vocabularies).

Each chunk's logits are recomputed in backward (activation checkpointing), so at most one (chunk x V) tile is alive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lmdistill.losses.reduce import IGNORE_INDEX


def row_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               logit_softcap: float | None = None) -> torch.Tensor:
    """float32 logits softcap(h Wᵀ + b) of some rows: hidden (N, H), weight (V, H) -> (N, V). One chunk of the chunked
    losses here; also a head applied at the loss positions only (a sparse teacher needs the student's whole
    distribution there, and nowhere else)."""
    logits = F.linear(hidden, weight, bias).float()
    if logit_softcap is not None:
        logits = logit_softcap * torch.tanh(logits / logit_softcap)
    return logits


def _valid_rows(targets, mask, ignore_index=IGNORE_INDEX):
    """Flat indices of the positions with a target and, given a mask, inside it."""
    valid = targets.reshape(-1) != ignore_index
    if mask is not None:
        valid = valid & mask.reshape(-1).to(torch.bool)
    return valid.nonzero().squeeze(-1)


def _chunk_cross_entropy_sum(hidden, weight, bias, targets, logit_softcap, label_smoothing):
    logits = row_logits(hidden, weight, bias, logit_softcap)
    return F.cross_entropy(logits, targets, reduction="sum", label_smoothing=label_smoothing)


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    num_valid: torch.Tensor | float | None = None,
    logit_softcap: float | None = None,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    chunk_tokens: int = 512,
) -> torch.Tensor:
    """Masked-mean CE of ``targets`` under logits ``hidden @ weight.T + bias``, as ``reduce(ce(...), mask, num_valid)``.

    Shapes: ``hidden`` (..., H), ``weight`` (V, H), ``targets`` and ``mask`` (...). Positions whose target is
    ``ignore_index`` or whose mask is False are left out; the sum is divided by ``num_valid`` (default: their count).
    """
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    rows = _valid_rows(targets, mask, ignore_index)
    total = flat_hidden.new_zeros((), dtype=torch.float32)
    for chunk in rows.split(chunk_tokens):
        total = total + checkpoint(
            _chunk_cross_entropy_sum, flat_hidden[chunk], weight, bias, flat_targets[chunk], logit_softcap, label_smoothing,
            use_reentrant=False,
        )
    denominator = rows.numel() if num_valid is None else num_valid
    if isinstance(denominator, torch.Tensor):
        denominator = denominator.to(total.dtype).clamp(min=1)
    else:
        denominator = max(float(denominator), 1.0)
    return (total / denominator).to(hidden.dtype)


def _chunk_target_log_probs(hidden, weight, bias, targets, logit_softcap):
    logits = row_logits(hidden, weight, bias, logit_softcap)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def chunked_linear_target_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    logit_softcap: float | None = None,
    chunk_tokens: int = 512,
) -> torch.Tensor:
    """log softmax(hidden @ weight.T + bias)[target] per position, float32, chunk by chunk (each chunk's logits
    recomputed in backward), so no (N x V) tensor is ever alive.

    Shapes: ``hidden`` (..., H), ``weight`` (V, H), ``targets`` and ``mask`` (...) -> (...). Only positions with
    ``mask`` True and a target other than ``IGNORE_INDEX`` are computed; the others are 0.
    """
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    rows = _valid_rows(targets, mask)
    out = flat_hidden.new_zeros(flat_targets.shape, dtype=torch.float32)
    pieces = [checkpoint(_chunk_target_log_probs, flat_hidden[chunk], weight, bias, flat_targets[chunk], logit_softcap,
                         use_reentrant=False) for chunk in rows.split(chunk_tokens)]
    if pieces:
        out = out.index_put((rows,), torch.cat(pieces))
    return out.reshape(targets.shape)
