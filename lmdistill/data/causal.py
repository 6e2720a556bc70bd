"""Turn records into causal-LM examples: {"input_ids": list[int], "labels": list[int]} with -100 outside the loss.

Labels equal input_ids at positions in the loss (the trainer shifts them, Hugging Face convention). Which positions
are in the loss is decided by structure (prompt vs completion, assistant spans, document boundaries), never by token
values: with pad == eos, the EOS that ends a document or completion must stay in the loss.

- text: each document is tokenised (with the tokenizer's own special tokens, e.g. BOS) and followed by EOS. With
  ``pack`` the stream is cut into blocks of exactly ``max_length`` (a final block of at least 2 tokens is kept,
  shorter); documents may straddle blocks and attend across their EOS, as in GPT-2 style pre-training. Without
  ``pack`` each document is one example, truncated to ``max_length``.
- prompt_completion: prompt (labels -100) + completion + EOS, truncated from the end; an example with no completion
  token left is dropped and counted.
- chat: see :mod:`lmdistill.data.chat`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from lmdistill.config import DataConfig
from lmdistill.data.chat import tokenize_chats, validate_messages
from lmdistill.data.readers import read_records
from lmdistill.errors import UserError
from lmdistill.losses import IGNORE_INDEX

logger = logging.getLogger(__name__)

Example = dict[str, list[int]]


@dataclass(frozen=True)
class BuildStats:
    """What tokenisation did: records in, examples out, tokens, loss tokens, truncated and dropped examples."""

    records: int
    examples: int
    tokens: int
    loss_tokens: int  # positions in the loss (see loss_positions)
    predicted_positions: int  # positions that predict a token: Σ (len − 1)
    truncated: int  # examples cut at max_length (packing cuts everything, so 0 there)
    dropped: int  # records that left no example: nothing in the loss after truncation, or under 2 tokens

    @property
    def loss_token_fraction(self) -> float:
        return self.loss_tokens / self.predicted_positions if self.predicted_positions else 0.0

    def describe(self, name: str) -> str:
        return (
            f"{name}: {self.records} records -> {self.examples} examples, {self.tokens} tokens, "
            f"{self.loss_token_fraction:.1%} in the loss, {self.truncated} truncated, {self.dropped} dropped"
        )


def loss_positions(examples: list[Example]) -> tuple[int, int]:
    """(positions in the loss, positions predicted) of causal examples: Σ_t≥1 [label_t ≠ -100] and Σ (len − 1).

    The first label never counts: nothing predicts it (the task's targets are labels[1:]). The one rule for "how
    much of the data is in the loss", used by the data reader's report and by preflight.
    """
    in_loss = sum(sum(label != IGNORE_INDEX for label in example["labels"][1:]) for example in examples)
    predicted = sum(max(len(example["labels"]) - 1, 0) for example in examples)
    return in_loss, predicted


def loss_token_fraction(examples: list[Example]) -> float:
    """Fraction of predicted positions that are in the loss (see :func:`loss_positions`)."""
    in_loss, predicted = loss_positions(examples)
    return in_loss / predicted if predicted else 0.0


def build_causal_examples(records: list[dict[str, Any]], tokenizer: Any, data: DataConfig) -> list[Example]:
    """Examples for ``data.format`` from ``records``; see the module docstring for the rules."""
    return build_causal_examples_with_stats(records, tokenizer, data)[0]


def build_causal_examples_with_stats(
    records: list[dict[str, Any]], tokenizer: Any, data: DataConfig
) -> tuple[list[Example], BuildStats]:
    """:func:`build_causal_examples` plus the :class:`BuildStats` of the run."""
    if data.format == "text":
        texts = _field_values(records, data.text_field, "text_field")
        documents = document_tokens(tokenizer, texts)
        if data.pack:
            examples, truncated = _pack(documents, data.max_length), 0
        else:
            examples = [{"input_ids": ids[: data.max_length], "labels": ids[: data.max_length]} for ids in documents]
            truncated = sum(len(ids) > data.max_length for ids in documents)
    elif data.format == "prompt_completion":
        prompts = _tokenize(tokenizer, _field_values(records, data.prompt_field, "prompt_field"), special=True)
        completions = _tokenize(tokenizer, _field_values(records, data.completion_field, "completion_field"), special=False)
        eos = _eos_id(tokenizer)
        full = [
            {"input_ids": prompt + completion + [eos], "labels": [IGNORE_INDEX] * len(prompt) + completion + [eos]}
            for prompt, completion in zip(prompts, completions)
        ]
        examples, truncated = _truncate(full, data.max_length)
    else:
        conversations = [
            validate_messages(value, f"record {index}", data.messages_field)
            for index, value in enumerate(_field_values(records, data.messages_field, "messages_field", kind=list))
        ]
        full = tokenize_chats(conversations, tokenizer, [f"record {index}" for index in range(len(records))])
        examples, truncated = _truncate(full, data.max_length)
    kept = [ex for ex in examples if len(ex["input_ids"]) >= 2 and any(label != IGNORE_INDEX for label in ex["labels"][1:])]
    loss_tokens, predicted = loss_positions(kept)
    tokens = sum(len(ex["input_ids"]) for ex in kept)
    stats = BuildStats(len(records), len(kept), tokens, loss_tokens, predicted, truncated, dropped=len(examples) - len(kept))
    return kept, stats


def document_tokens(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's tokens (with the tokenizer's own special tokens) followed by EOS: a document of a text corpus."""
    return [ids + [_eos_id(tokenizer)] for ids in _tokenize(tokenizer, texts, special=True)]


def _field_values(records: list[dict[str, Any]], field: str, config_key: str, *, kind: type = str) -> list[Any]:
    values = []
    for index, record in enumerate(records):
        if field not in record:
            raise UserError(
                f"record {index} has no field {field!r}; set data.{config_key} to one of its keys: "
                f"{', '.join(map(repr, record)) or '(none)'}"
            )
        value = record[field]
        if not isinstance(value, kind):
            raise UserError(
                f"record {index}: field {field!r} holds {type(value).__name__}, expected {kind.__name__}; "
                f"fix the data or point data.{config_key} at another field"
            )
        values.append(value)
    return values


TOKENIZE_CHUNK = 1024  # texts per tokenizer call: a fast tokenizer's encodings (offsets, token strings) are many
# times the size of the ids, so the corpus's are never all alive at once


def _tokenize(tokenizer: Any, texts: list[str], *, special: bool) -> list[list[int]]:
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        chunk = tokenizer(texts[start : start + TOKENIZE_CHUNK], add_special_tokens=special, return_attention_mask=False)
        ids.extend(list(one) for one in chunk["input_ids"])
    return ids


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token, needed to end documents; use a tokenizer that defines one")
    return int(tokenizer.eos_token_id)


def _pack(documents: list[list[int]], max_length: int) -> list[Example]:
    """The documents end to end, cut into blocks of ``max_length`` (the last one may be shorter); a document's list
    is dropped as soon as it is packed, so the corpus is held about once, not twice."""
    blocks, current = [], []
    for index, ids in enumerate(documents):
        start = 0
        while start < len(ids):
            taken = ids[start : start + max_length - len(current)]
            current.extend(taken)
            start += len(taken)
            if len(current) == max_length:
                blocks.append(current)
                current = []
        documents[index] = []
    if current:
        blocks.append(current)
    return [{"input_ids": block, "labels": list(block)} for block in blocks if len(block) >= 2]


def _truncate(examples: list[Example], max_length: int) -> tuple[list[Example], int]:
    truncated = sum(len(ex["input_ids"]) > max_length for ex in examples)
    cut = [{"input_ids": ex["input_ids"][:max_length], "labels": ex["labels"][:max_length]} for ex in examples]
    return cut, truncated


def split_eval(items: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Deterministically hold out round(fraction·n) items (at least 1 when fraction > 0); both parts keep input order."""
    if fraction <= 0:
        return list(items), []
    eval_count = max(1, round(len(items) * fraction))
    if eval_count >= len(items):
        raise UserError(
            f"data.eval_fraction={fraction} of {len(items)} records leaves nothing to train on; "
            "lower it or add data"
        )
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = set(order[:eval_count])
    train = [item for index, item in enumerate(items) if index not in held_out]
    held = [item for index, item in enumerate(items) if index in held_out]
    return train, held


def load_causal_datasets(data: DataConfig, tokenizer: Any, seed: int) -> tuple[list[Example], list[Example] | None]:
    """Read, split and tokenise the train (and eval) data; logs one statistics line per split.

    Eval comes from ``data.eval`` or, with ``data.eval_fraction``, from records held out before tokenisation (so a
    packed block never mixes train and eval documents). ``max_examples`` caps the records read from each source.
    """
    records = read_records(data.train, dataset_split=data.dataset_split, max_examples=data.max_examples)
    if data.eval is not None:
        eval_records = read_records(data.eval, dataset_split=data.dataset_split, max_examples=data.max_examples)
    else:
        records, eval_records = split_eval(records, data.eval_fraction, seed)
    train, train_stats = build_causal_examples_with_stats(records, tokenizer, data)
    logger.info(train_stats.describe("train"))
    if not train:
        raise UserError(
            f"no training examples left after tokenisation ({train_stats.dropped} of {len(records)} records dropped); "
            "raise data.max_length or check the data fields"
        )
    if not eval_records:
        return train, None
    evaluation, eval_stats = build_causal_examples_with_stats(eval_records, tokenizer, data)
    logger.info(eval_stats.describe("eval"))
    if not evaluation:
        raise UserError("no eval examples left after tokenisation; raise data.max_length or check data.eval")
    return train, evaluation
