"""Capture what attention losses need (queries, keys, values, raw scores) from any model that uses HF attention.

Hugging Face models call their attention through ``AttentionInterface``. :func:`enable_capture` switches a model to
the implementation registered here: it computes ordinary eager attention and, inside a :func:`capture` context,
records each layer's Q, K, V (key/value heads repeated to the query head count) and the masked pre-softmax scores,
with masked entries (padding, future positions) set to ``-inf``. Outside a capture it is plain eager attention.

Encoder-decoder models: T5's relative position bias (the ``position_bias`` the model passes) is part of the scores, and
each captured call knows its stack ("encoder", "decoder" self-attention, "cross" attention), so
:meth:`CapturedAttention.by_stack` gives each stack's layers in order.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from lmdistill.errors import UserError
from lmdistill.losses.attention import AttentionCapture
from lmdistill.models.pruning import seq2seq_layer_lists

IMPLEMENTATION = "lmdistill_capture"
_LAYER_TAG = "_lmdistill_stack_layer"  # set on every module of an encoder-decoder block: (stack, block index)


class CapturedAttention(list):
    """The :class:`AttentionCapture` of every attention call in call order (a plain list of them), and for each call
    the block it ran in when the model's blocks are tagged (:func:`enable_capture` on an encoder-decoder model)."""

    def __init__(self):
        super().__init__()
        self.origins: list[tuple[tuple[str, int] | None, int]] = []  # (stack, block) or None, id of the module

    def by_stack(self) -> dict[str, list[AttentionCapture]]:
        """{"encoder": [...], "decoder": [...], "cross": [...]}, each in block order, for one forward pass.

        Within a decoder block the first attention module called is its self-attention and the other its
        cross-attention: every Hugging Face encoder-decoder block attends to itself before the encoder output.
        """
        stacks: dict[str, list[AttentionCapture]] = {}
        self_attention: dict[int, int] = {}  # decoder block -> id of its self-attention module
        for record, (where, module_id) in zip(self, self.origins):
            if where is None:
                raise UserError("captured attention from a module outside the encoder and decoder blocks; this model's "
                                "attention cannot be split by stack")
            stack, block = where
            if stack == "decoder" and self_attention.setdefault(block, module_id) != module_id:
                stack = "cross"
            stacks.setdefault(stack, []).append(record)
        return stacks


_recording: contextvars.ContextVar[CapturedAttention | None] = contextvars.ContextVar("lmdistill_attention", default=None)


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
        records.origins.append((getattr(module, _LAYER_TAG, None), id(module)))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nan_to_num(weights)  # rows with every key masked (padding queries) become zeros, not NaN
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


AttentionInterface.register(IMPLEMENTATION, _capturing_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(IMPLEMENTATION, eager_mask)


def enable_capture(model: torch.nn.Module) -> None:
    """Route the model's attention through the capturing implementation (eager math; no SDPA/flash kernels); the
    blocks of an encoder-decoder model are tagged with their stack and index, for :meth:`CapturedAttention.by_stack`."""
    model.set_attn_implementation(IMPLEMENTATION)
    if getattr(model.config, "is_encoder_decoder", False):
        for stack, blocks in seq2seq_layer_lists(model).items():
            for index, block in enumerate(blocks):
                for module in block.modules():
                    setattr(module, _LAYER_TAG, (stack, index))


@contextlib.contextmanager
def capture() -> Iterator[CapturedAttention]:
    """Record the attention of every forward pass run inside the block, one entry per layer in call order."""
    records = CapturedAttention()
    token = _recording.set(records)
    try:
        yield records
    finally:
        _recording.reset(token)
