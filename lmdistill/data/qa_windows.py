"""Extractive QA tokenisation: (question, context) -> overlapping windows with answer token positions, and collation.

A window is ``[CLS] question [SEP] context-piece [SEP]`` (the tokenizer's pair template). Long contexts overflow
into further windows that overlap by ``doc_stride`` tokens. Position 0 (CLS) is the no-answer position.
"""

from __future__ import annotations

from typing import Any

import torch

from lmdistill.errors import UserError

Window = dict[str, Any]
NO_ANSWER = 0


def _cut_question(question: str, tokenizer: Any, max_question_tokens: int) -> tuple[str, int]:
    """The question without leading blanks, cut after its ``max_question_tokens``-th token; and its token count."""
    # Some SQuAD questions start with long runs of spaces, which only waste the window (as in HF's run_qa).
    question = question.lstrip()
    offsets = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= max_question_tokens:
        return question, len(offsets)
    return question[: offsets[max_question_tokens - 1][1]], max_question_tokens


def _check_settings(tokenizer: Any, doc_stride: int, max_question_tokens: int) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"{type(tokenizer).__name__} is a slow tokenizer without character offsets; question answering needs a "
            "fast one (AutoTokenizer.from_pretrained(..., use_fast=True), a tokenizer.json in the model dir)"
        )
    if max_question_tokens < 1 or doc_stride < 0:
        raise UserError(
            f"max_question_tokens={max_question_tokens} and doc_stride={doc_stride} must be >= 1 and >= 0; fix them"
        )


def _check_room(tokenizer: Any, max_length: int, doc_stride: int, question_tokens: int) -> None:
    # The tokenizer refuses a stride that is not smaller than the context tokens a window has room for.
    context_room = max_length - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
    if doc_stride >= context_room:
        raise UserError(
            f"max_length={max_length} leaves {context_room} context tokens beside a {question_tokens}-token question, "
            f"not more than doc_stride={doc_stride}; raise max_length or lower doc_stride / max_question_tokens"
        )


def _answer_positions(example: dict[str, Any], offsets: list, sequence_ids: list) -> tuple[int, int]:
    """Token indices of the first gold answer, or (0, 0) when the window does not hold all of it."""
    answers = example["answers"]
    if not answers["text"]:
        return NO_ANSWER, NO_ANSWER
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    context = [index for index, sequence in enumerate(sequence_ids) if sequence == 1]
    if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
        return NO_ANSWER, NO_ANSWER
    # The last token starting at or before the answer, and the first one ending at or after it.
    start = max(index for index in context if offsets[index][0] <= start_char)
    end = min(index for index in context if offsets[index][1] >= end_char)
    return start, end


def tokenize_qa(
    examples: list[dict[str, Any]], tokenizer: Any, *, max_length: int = 384, doc_stride: int = 128,
    max_question_tokens: int = 64,
) -> list[Window]:
    """Every example's windows, in example order.

    Each window: ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the tokenizer gives them) (S,);
    ``start_position``/``end_position`` (token indices of the first gold answer; both 0 when the window does not
    hold the whole answer or the example is unanswerable); ``example_index``; ``offsets`` (S,) of
    (char_start, char_end) into the context on context tokens, None elsewhere; ``context_mask`` (S,) 1 on context
    tokens. Questions are cut to ``max_question_tokens`` first; contexts overflow into windows overlapping by
    ``doc_stride`` tokens.
    """
    _check_settings(tokenizer, doc_stride, max_question_tokens)
    if not examples:
        return []
    questions, lengths = zip(*(_cut_question(example["question"], tokenizer, max_question_tokens)
                               for example in examples))
    _check_room(tokenizer, max_length, doc_stride, max(lengths))
    encoded = tokenizer(
        list(questions), [example["context"] for example in examples], truncation="only_second", max_length=max_length,
        stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
    )
    windows = []
    for row, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
        sequence_ids = encoded.sequence_ids(row)
        offsets = [tuple(pair) if sequence == 1 else None
                   for pair, sequence in zip(encoded["offset_mapping"][row], sequence_ids)]
        start, end = _answer_positions(examples[example_index], offsets, sequence_ids)
        window: Window = {
            "input_ids": list(encoded["input_ids"][row]), "attention_mask": list(encoded["attention_mask"][row]),
            "start_position": start, "end_position": end, "example_index": int(example_index), "offsets": offsets,
            "context_mask": [int(sequence == 1) for sequence in sequence_ids],
        }
        if "token_type_ids" in encoded:
            window["token_type_ids"] = list(encoded["token_type_ids"][row])
        windows.append(window)
    return windows


def collate_qa(windows: list[Window], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad windows to the longest: input_ids, attention_mask, token_type_ids (when present) (B, S) long;
    start_positions, end_positions (B,) long; position_mask (B, S) bool, True on context tokens and position 0.

    position_mask marks where an answer may start or end: the no-answer position is always legal, padding never.
    """
    batch_size = len(windows)
    seq_len = max(len(window["input_ids"]) for window in windows)
    input_ids = torch.full((batch_size, seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, seq_len), dtype=torch.long)
    token_type_ids = torch.zeros((batch_size, seq_len), dtype=torch.long)
    position_mask = torch.zeros((batch_size, seq_len), dtype=torch.bool)
    with_segments = "token_type_ids" in windows[0]
    for row, window in enumerate(windows):
        length = len(window["input_ids"])
        input_ids[row, :length] = torch.tensor(window["input_ids"], dtype=torch.long)
        attention_mask[row, :length] = torch.tensor(window["attention_mask"], dtype=torch.long)
        position_mask[row, :length] = torch.tensor(window["context_mask"], dtype=torch.bool)
        position_mask[row, NO_ANSWER] = True
        if with_segments:
            token_type_ids[row, :length] = torch.tensor(window["token_type_ids"], dtype=torch.long)
    batch = {
        "input_ids": input_ids, "attention_mask": attention_mask, "position_mask": position_mask,
        "start_positions": torch.tensor([window["start_position"] for window in windows], dtype=torch.long),
        "end_positions": torch.tensor([window["end_position"] for window in windows], dtype=torch.long),
    }
    if with_segments:
        batch["token_type_ids"] = token_type_ids
    return batch
