"""Bits per byte of held-out text: total NLL over the text's UTF-8 bytes, comparable across tokenizers.

Each model reads the texts with its *own* tokenizer. So that every byte of a text is predicted (not all but the
first token), a tokenizer that adds no BOS gets its BOS (or EOS, GPT-2's document separator) put in front. The
bytes counted are exactly those of the scored tokens, from the vocabulary's byte table
(:mod:`lmdistill.data.token_bytes`): SentencePiece's dummy prefix space is not text and is not counted, a text cut
at ``max_length`` counts only what was scored.

bits per byte = Σ_t −ln p(token_t | tokens_<t) / (ln 2 · bytes scored)
"""

from __future__ import annotations

from typing import Sequence

import torch

from lmdistill.data.token_bytes import TokenBytes, byte_spans
from lmdistill.errors import UserError
from lmdistill.eval.held_out import causal_lm_scores
from lmdistill.eval.lm_metrics import bits_per_byte


def scored_examples(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[dict], int]:
    """Causal examples (every token after the first in the loss) and the UTF-8 bytes their scored tokens spell."""
    table = TokenBytes.of(tokenizer)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    examples, total_bytes = [], 0
    for text in texts:
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
        if start is not None and (not ids or ids[0] not in table.special):
            ids = [start] + ids
        ids = ids[:max_length]
        if len(ids) < 2:
            continue
        spans = byte_spans(table, ids, text.encode("utf-8"))
        if spans[-1] is not None:
            total_bytes += spans[-1][1] - spans[0][1]
        else:  # the tokens do not spell the text back (a normaliser changed it): count what they spell
            total_bytes += sum(len(table.table[i]) for i in ids[1:])
        examples.append({"input_ids": ids, "labels": ids})
    return examples, total_bytes


def text_bits_per_byte(model: torch.nn.Module, tokenizer, texts: Sequence[str], *, max_length: int = 256,
                       batch_size: int = 8) -> dict[str, float]:
    """``bits_per_byte``, ``nll_sum`` (nats), ``num_bytes`` and ``num_tokens`` of ``model`` on ``texts``."""
    examples, num_bytes = scored_examples(tokenizer, texts, max_length)
    if not examples:
        raise UserError("no held-out text to score: give texts of at least one token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    scores = causal_lm_scores(model, None, examples, pad, batch_size, device)
    nll_sum = scores["nll_per_token"] * scores["num_tokens"]
    return {"bits_per_byte": bits_per_byte(nll_sum, num_bytes), "nll_sum": nll_sum, "num_bytes": num_bytes,
            "num_tokens": scores["num_tokens"]}
