"""Sequence-classification data: records with a sentence (or a sentence pair) and a label -> token ids + class id.

Labels are class ids in [0, K). With ``data.labels`` (class names in id order) a label may be a name from that list
or an id below its length; without it a label must be a non-negative integer (or an integer string, as TSV gives).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lmdistill.config import DataConfig
from lmdistill.data.causal import split_eval
from lmdistill.data.readers import read_records
from lmdistill.errors import UserError

logger = logging.getLogger(__name__)

Example = dict[str, Any]  # input_ids: list[int], token_type_ids: list[int] (when the tokenizer gives them), label: int


def label_id(value: Any, labels: list[str] | None, *, where: str) -> int:
    """The class id of one raw label: a name in ``labels``, or an integer id (in range of ``labels`` when given)."""
    if labels is not None and isinstance(value, str) and value in labels:
        return labels.index(value)
    number = _as_integer(value)
    if number is None:
        known = f"one of {labels}" if labels is not None else "an integer class id (or set data.labels to the class names)"
        raise UserError(f"{where}: label {value!r} is not {known}; fix the data or data.labels")
    if number < 0 or (labels is not None and number >= len(labels)):
        bound = f"0..{len(labels) - 1} (data.labels has {len(labels)} classes)" if labels is not None else "0 or more"
        raise UserError(f"{where}: label {number} is out of range, class ids must be {bound}; fix the data or data.labels")
    return number


def _as_integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    return None


def _text(record: dict[str, Any], field: str, config_key: str, index: int) -> str:
    if field not in record:
        raise UserError(
            f"record {index} has no field {field!r}; set data.{config_key} to one of its keys: "
            f"{', '.join(map(repr, record)) or '(none)'}"
        )
    value = record[field]
    if not isinstance(value, str):
        raise UserError(f"record {index}: field {field!r} holds {type(value).__name__}, expected text; fix data.{config_key}")
    return value


def build_classification_examples(records: list[dict[str, Any]], tokenizer: Any, data: DataConfig) -> list[Example]:
    """Tokenise each record's sentence (pair) with special tokens, truncated to ``data.max_length``; map labels."""
    if not records:
        return []
    first = [_text(r, data.text_field, "text_field", i) for i, r in enumerate(records)]
    second = None
    if data.text_pair_field is not None:
        second = [_text(r, data.text_pair_field, "text_pair_field", i) for i, r in enumerate(records)]
    labels = []
    for index, record in enumerate(records):
        if data.label_field not in record:
            raise UserError(
                f"record {index} has no field {data.label_field!r}; set data.label_field to one of its keys: "
                f"{', '.join(map(repr, record))}"
            )
        labels.append(label_id(record[data.label_field], data.labels, where=f"record {index}"))
    encoded = tokenizer(first, second, truncation=True, max_length=data.max_length)
    examples = []
    for index, label in enumerate(labels):
        example: Example = {"input_ids": list(encoded["input_ids"][index]), "label": label}
        if "token_type_ids" in encoded:
            example["token_type_ids"] = list(encoded["token_type_ids"][index])
        examples.append(example)
    return examples


def load_classification_datasets(data: DataConfig, tokenizer: Any, seed: int) -> tuple[list[Example], list[Example] | None]:
    """Read, split (``data.eval`` or ``data.eval_fraction``) and tokenise the train and eval records."""
    records = read_records(data.train, dataset_split=data.dataset_split, max_examples=data.max_examples)
    if data.eval is not None:
        eval_records = read_records(data.eval, dataset_split=data.dataset_split, max_examples=data.max_examples)
    else:
        records, eval_records = split_eval(records, data.eval_fraction, seed)
    train = build_classification_examples(records, tokenizer, data)
    evaluation = build_classification_examples(eval_records, tokenizer, data) or None
    logger.info("classification data: %d train, %d eval examples", len(train), len(evaluation or []))
    return train, evaluation


def collate_classification(examples: list[Example], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask, token_type_ids (when present) (B, S); labels (B,).

    The mask comes from the lengths; padded segment ids are 0.
    """
    batch_size = len(examples)
    seq_len = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((batch_size, seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, seq_len), dtype=torch.long)
    with_segments = "token_type_ids" in examples[0]
    token_type_ids = torch.zeros((batch_size, seq_len), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example["input_ids"])
        input_ids[row, :length] = torch.tensor(example["input_ids"], dtype=torch.long)
        attention_mask[row, :length] = 1
        if with_segments:
            token_type_ids[row, :length] = torch.tensor(example["token_type_ids"], dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "labels": torch.tensor([example["label"] for example in examples], dtype=torch.long)}
    if with_segments:
        batch["token_type_ids"] = token_type_ids
    return batch
