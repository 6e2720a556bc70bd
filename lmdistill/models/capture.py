"""Capture what attention losses need (queries, keys, values, raw scores) from any model that uses HF attention.

Hugging Face models call their attention through ``AttentionInterface``. :func:`enable_capture` switches a model to
the implementation registered here: it computes ordinary eager attention and, inside a :func:`capture` context,
records each layer's Q, K, V (key/value heads repeated to the query head count) and the masked pre-softmax scores,
with masked entries (padding, future positions) set to ``-inf``. Outside a capture it is plain eager attention.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from lmdistill.losses.attention import AttentionCapture

IMPLEMENTATION = "lmdistill_capture"

_recording: contextvars.ContextVar[list[AttentionCapture] | None] = contextvars.ContextVar("lmdistill_attention", default=None)


def _repeat_heads(states: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, kv_heads, S, d) -> (B, kv_heads * groups, S, d) for grouped-query attention."""
    return states if groups == 1 else states.repeat_interleave(groups, dim=1)


def _capturing_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, position_bias=None, **kwargs):
    groups = query.shape[1] // key.shape[1]
    key = _repeat_heads(key, groups)
    value = _repeat_heads(value, groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if position_bias is not None:  # T5's relative position bias (1 or B, heads, Q, K), added before the mask as T5 does
        scores = scores + position_bias
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            # Additive masks use the dtype's minimum; make them exact -inf so probabilities are exactly zero.
            blocked = attention_mask <= torch.finfo(attention_mask.dtype).min / 2
            scores = (scores + attention_mask).masked_fill(blocked, float("-inf"))
    records = _recording.get()
    if records is not None:
        records.append(AttentionCapture(query=query, key=key, value=value, scores=scores))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nan_to_num(weights)  # rows with every key masked (padding queries) become zeros, not NaN
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


AttentionInterface.register(IMPLEMENTATION, _capturing_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, eager_mask)


def enable_capture(model: torch.nn.Module) -> None:
    """Route the model's attention through the capturing implementation (eager math; no SDPA/flash kernels)."""
    model.set_attn_implementation(IMPLEMENTATION)


@contextlib.contextmanager
def capture() -> Iterator[list[AttentionCapture]]:
    """Record the attention of every forward pass run inside the block, one entry per layer in call order."""
    records: list[AttentionCapture] = []
    token = _recording.set(records)
    try:
        yield records
    finally:
        _recording.reset(token)
