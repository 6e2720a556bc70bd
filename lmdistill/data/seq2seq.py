"""Turn source/target records into encoder-decoder examples: {"input_ids": source ids, "labels": target ids}.

The source is ``data.source_prefix`` + the source field, tokenised with the tokenizer's own special tokens (T5 and
BART end it with </s>). The target is tokenised as a target (``text_target``) and always ends with EOS, so the
student learns to stop even with tokenizers that add no EOS themselves (e.g. Llama's SentencePiece). A source longer
than ``data.max_length`` or a target longer than ``data.max_target_length`` (default ``max_length``) is cut; a cut
sequence keeps its final special token (the EOS T5 and BART put there, always a target's EOS); both are counted. A record whose source or target is empty is dropped and counted.
Decoder inputs are not stored: the collator builds them from the labels the model's way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from lmdistill.config import DataConfig
from lmdistill.data.causal import split_eval
from lmdistill.data.readers import read_records
from lmdistill.errors import UserError
from lmdistill.losses import IGNORE_INDEX

logger = logging.getLogger(__name__)

Example = dict[str, list[int]]


@dataclass(frozen=True)
class PairStats:
    """What tokenisation did: records in, examples out, source and target tokens, truncations and drops."""

    records: int
    examples: int
    source_tokens: int
    target_tokens: int  # every target token is in the loss
    truncated_sources: int
    truncated_targets: int
    dropped: int  # records with an empty source or target

    def describe(self, name: str) -> str:
        return (f"{name}: {self.records} records -> {self.examples} examples, {self.source_tokens} source tokens, "
                f"{self.target_tokens} target tokens (all in the loss), {self.truncated_sources} sources and "
                f"{self.truncated_targets} targets truncated, {self.dropped} dropped")


def field_values(records: list[dict[str, Any]], field: str, config_key: str) -> list[str]:
    """The string ``field`` of every record; a UserError naming the record and the setting when one lacks it."""
    values = []
    for index, record in enumerate(records):
        if field not in record:
            raise UserError(f"record {index} has no field {field!r}; set data.{config_key} to one of its keys: "
                            f"{', '.join(map(repr, record)) or '(none)'}")
        value = record[field]
        if not isinstance(value, str):
            raise UserError(f"record {index}: field {field!r} holds {type(value).__name__}, expected str; "
                            f"fix the data or point data.{config_key} at another field")
        values.append(value)
    return values


def encode_sources(tokenizer: Any, sources: list[str], prefix: str) -> list[list[int]]:
    """Token ids of ``prefix + source`` with the tokenizer's special tokens (uncut)."""
    if not sources:
        return []
    return [list(ids) for ids in tokenizer([prefix + text for text in sources], add_special_tokens=True)["input_ids"]]


def encode_targets(tokenizer: Any, targets: list[str]) -> list[list[int]]:
    """Token ids of each target, tokenised as a target, ending with EOS (uncut)."""
    if not targets:
        return []
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no EOS token, needed to end targets; use a tokenizer that defines one")
    encoded = [list(ids) for ids in tokenizer(text_target=targets, add_special_tokens=True)["input_ids"]]
    return [ids if ids and ids[-1] == eos else ids + [eos] for ids in encoded]


def cut(ids: list[int], limit: int, special_ids: set[int]) -> list[int]:
    """``ids`` at most ``limit`` long; a final special token (EOS) stays at the end."""
    if len(ids) <= limit:
        return ids
    return ids[: limit - 1] + ids[-1:] if ids[-1] in special_ids else ids[:limit]


def build_seq2seq_examples(records: list[dict[str, Any]], tokenizer: Any, data: DataConfig) -> tuple[list[Example], PairStats]:
    """Examples and their :class:`PairStats`; see the module docstring for the rules."""
    sources = field_values(records, data.source_field, "source_field")
    targets = field_values(records, data.target_field, "target_field")
    keep = [i for i in range(len(records)) if sources[i].strip() and targets[i].strip()]
    source_ids = encode_sources(tokenizer, [sources[i] for i in keep], data.source_prefix)
    target_ids = encode_targets(tokenizer, [targets[i] for i in keep])
    target_limit = data.max_target_length or data.max_length
    special = set(tokenizer.all_special_ids) | {tokenizer.eos_token_id}
    examples = [{"input_ids": cut(s, data.max_length, special), "labels": cut(t, target_limit, special)}
                for s, t in zip(source_ids, target_ids)]
    stats = PairStats(
        records=len(records), examples=len(examples),
        source_tokens=sum(len(e["input_ids"]) for e in examples), target_tokens=sum(len(e["labels"]) for e in examples),
        truncated_sources=sum(len(s) > data.max_length for s in source_ids),
        truncated_targets=sum(len(t) > target_limit for t in target_ids), dropped=len(records) - len(keep))
    return examples, stats


def load_seq2seq_datasets(data: DataConfig, tokenizer: Any, seed: int) -> tuple[list[Example], list[Example] | None]:
    """Read, split and tokenise the train (and eval) pairs; logs one statistics line per split (as the causal reader)."""
    records = read_records(data.train, dataset_split=data.dataset_split, max_examples=data.max_examples)
    if data.eval is not None:
        eval_records = read_records(data.eval, dataset_split=data.dataset_split, max_examples=data.max_examples)
    else:
        records, eval_records = split_eval(records, data.eval_fraction, seed)
    train, train_stats = build_seq2seq_examples(records, tokenizer, data)
    logger.info(train_stats.describe("train"))
    if not train:
        raise UserError(f"no training pairs left ({train_stats.dropped} of {len(records)} records have an empty source "
                        "or target); check data.source_field and data.target_field")
    if not eval_records:
        return train, None
    evaluation, eval_stats = build_seq2seq_examples(eval_records, tokenizer, data)
    logger.info(eval_stats.describe("eval"))
    if not evaluation:
        raise UserError("no eval pairs left: every eval record has an empty source or target; check data.eval")
    return train, evaluation


DecoderInputs = Callable[[torch.Tensor], torch.Tensor]  # labels (B, T) with -100 -> decoder_input_ids (B, T)


def collate_seq2seq(examples: list[Example], pad_token_id: int, decoder_inputs: DecoderInputs) -> dict[str, torch.Tensor]:
    """Right-padded input_ids and attention_mask (B, S); labels (B, T) with -100 on padding; decoder_input_ids built
    from the labels by ``decoder_inputs`` (the model's own rule: shifted right behind the decoder start token, -100 ->
    pad); decoder_attention_mask (B, T) from the target lengths (never from token values: pad may equal EOS)."""
    batch_size = len(examples)
    source_len = max(len(e["input_ids"]) for e in examples)
    target_len = max(len(e["labels"]) for e in examples)
    input_ids = torch.full((batch_size, source_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, source_len), dtype=torch.long)
    labels = torch.full((batch_size, target_len), IGNORE_INDEX, dtype=torch.long)
    decoder_attention_mask = torch.zeros((batch_size, target_len), dtype=torch.long)
    for row, example in enumerate(examples):
        source, target = example["input_ids"], example["labels"]
        input_ids[row, : len(source)] = torch.tensor(source, dtype=torch.long)
        attention_mask[row, : len(source)] = 1
        labels[row, : len(target)] = torch.tensor(target, dtype=torch.long)
        decoder_attention_mask[row, : len(target)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "decoder_input_ids": decoder_inputs(labels), "decoder_attention_mask": decoder_attention_mask}
