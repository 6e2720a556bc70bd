"""Extractive-QA datasets for a run: SQuAD-format records split by article, tokenised into context windows."""

from __future__ import annotations

import logging
from typing import Any

from lmdistill.config import DataConfig
from lmdistill.data.qa_windows import NO_ANSWER, tokenize_qa
from lmdistill.data.squad import read_squad, split_by_article

log = logging.getLogger(__name__)


def load_qa_examples(data: DataConfig, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, eval) SQuAD examples: ``data.eval`` when given, else ``data.eval_fraction`` of the *articles*
    (never a paragraph on both sides)."""
    examples = read_squad(data.train, max_examples=data.max_examples, dataset_split=data.dataset_split)
    if data.eval is not None:
        return examples, read_squad(data.eval, dataset_split=data.dataset_split)
    return split_by_article(examples, data.eval_fraction, seed) if data.eval_fraction > 0 else (examples, [])


def qa_windows(examples: list[dict[str, Any]], tokenizer: Any, data: DataConfig, name: str) -> list[dict[str, Any]]:
    """The windows of ``examples`` (see :func:`lmdistill.data.qa_windows.tokenize_qa`); logs one statistics line."""
    windows = tokenize_qa(examples, tokenizer, max_length=data.max_length, doc_stride=data.doc_stride,
                          max_question_tokens=data.max_question_tokens)
    answered = sum(window["start_position"] != NO_ANSWER for window in windows)
    log.info("%s: %d questions -> %d windows, %d holding their answer", name, len(examples), len(windows), answered)
    return windows
