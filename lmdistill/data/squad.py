"""Extractive question answering data (SQuAD v1.1 / v2.0): read examples and split them by article.

An example is ``{"id", "title", "context", "question", "answers": {"text": [...], "answer_start": [...]}}`` with
character offsets into ``context``; an unanswerable question (v2.0 ``is_impossible``) has empty answer lists.
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch

from lmdistill.data.readers import read_records
from lmdistill.errors import UserError

Example = dict[str, Any]
_START_SLACK = 2  # SQuAD has a few answer_start values off by one or two characters


def read_squad(
    source: str | list[str], *, max_examples: int | None = None, dataset_split: str = "train"
) -> list[Example]:
    """The questions of ``source`` in file order, at most ``max_examples``, each answer checked against its context.

    ``source`` is the official nested JSON (``data -> paragraphs -> qas``) or flat records (jsonl/json/csv/parquet
    or a `datasets` id, as Hugging Face's ``squad``) with ``id``, ``question``, ``context``, ``answers`` and an
    optional ``title``. An ``answer_start`` up to 2 characters off is moved onto its text.
    """
    raw = read_records(source, dataset_split=dataset_split, max_examples=max_examples)
    if "paragraphs" in raw[0]:
        # max_examples counts questions, not the articles read_records counted
        articles = raw if max_examples is None else read_records(source, dataset_split=dataset_split)
        raw = _flatten_articles(articles, max_examples)
    examples = [_flat_example(record, index) for index, record in enumerate(raw)]
    seen: set[str] = set()
    for example in examples:
        if example["id"] in seen:
            raise UserError(
                f"question id {example['id']!r} appears twice in {source!r}; give every question its own id"
            )
        seen.add(example["id"])
    return examples


def _field(record: dict[str, Any], name: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if name not in record:
        keys = ", ".join(map(repr, record)) or "(none)"
        raise UserError(f"{where} has no field {name!r} (its keys: {keys}); write SQuAD-format data")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(f"{where}: field {name!r} holds {type(value).__name__}, not the expected type; fix the data")
    return value


def _flatten_articles(articles: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """Nested articles -> flat records with ``answers`` as {text, answer_start} lists (empty when impossible)."""
    records = []
    for article_index, article in enumerate(articles):
        title = article.get("title") or ""
        for paragraph_index, paragraph in enumerate(_field(article, "paragraphs", f"article {article_index}", list)):
            where = f"article {article_index} paragraph {paragraph_index}"
            context = _field(paragraph, "context", where)
            for qa_index, qa in enumerate(_field(paragraph, "qas", where, list)):
                if limit is not None and len(records) >= limit:
                    return records
                qa_where = f"{where} question {qa_index}"
                answers = [] if qa.get("is_impossible") else _field(qa, "answers", qa_where, list)
                for answer in answers:
                    if not isinstance(answer, dict):
                        raise UserError(f"{qa_where}: an answer is not a {{text, answer_start}} object; fix the data")
                records.append({
                    "id": _field(qa, "id", qa_where, (str, int)), "title": title, "context": context,
                    "question": _field(qa, "question", qa_where),
                    "answers": {"text": [a.get("text") for a in answers],
                                "answer_start": [a.get("answer_start") for a in answers]},
                })
    return records


def _flat_example(record: dict[str, Any], index: int) -> Example:
    where = f"record {index}"
    question_id = str(_field(record, "id", where, (str, int)))
    where = f"question id {question_id!r}"
    context = _field(record, "context", where)
    answers = _field(record, "answers", where, (dict, list, str))
    if isinstance(answers, str):  # CSV holds the answers as a JSON string
        try:
            answers = json.loads(answers)
        except json.JSONDecodeError:
            raise UserError(f"{where}: answers {answers[:40]!r} is not JSON; write it as "
                            '{"text": [...], "answer_start": [...]}') from None
    if isinstance(answers, list):  # the nested format's [{text, answer_start}, ...]
        if not all(isinstance(answer, dict) for answer in answers):
            raise UserError(f"{where}: an answer is not a {{text, answer_start}} object; fix the data")
        answers = {"text": [a.get("text") for a in answers], "answer_start": [a.get("answer_start") for a in answers]}
    if not isinstance(answers, dict):
        raise UserError(f'{where}: answers must be {{"text": [...], "answer_start": [...]}}; fix the data')
    texts, starts = answers.get("text"), answers.get("answer_start")
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        raise UserError(f"{where}: answers must hold equal-length lists 'text' and 'answer_start'; fix the data")
    fixed = [_checked_start(context, text, start, where) for text, start in zip(texts, starts)]
    return {"id": question_id, "title": str(record.get("title") or ""), "context": context,
            "question": _field(record, "question", where), "answers": {"text": list(texts), "answer_start": fixed}}


def _checked_start(context: str, text: Any, start: Any, where: str) -> int:
    """``start`` when context[start:start+len(text)] == text, else the nearest start within ±2 characters."""
    if not isinstance(text, str) or not text:
        raise UserError(f"{where}: answer text {text!r} is not a non-empty string; fix the data")
    if isinstance(start, float) and start.is_integer():
        start = int(start)
    if not isinstance(start, int) or isinstance(start, bool):
        raise UserError(f"{where}: answer_start {start!r} is not an integer character offset; fix the data")
    for shift in (0, -1, 1, -2, 2):
        candidate = start + shift
        if candidate >= 0 and context[candidate:candidate + len(text)] == text:
            return candidate
    raise UserError(
        f"{where}: answer {text!r} is not at answer_start={start} of its context (nor within {_START_SLACK} "
        "characters); fix the answer text or answer_start"
    )


def _article_key(example: Example) -> tuple[str, str]:
    # Untitled examples group by paragraph, so a context never lands on both sides of a split.
    return ("title", example["title"]) if example["title"] else ("context", example["context"])


def _split_by_counts(examples: list[Example], counts: list[int], seed: int) -> list[list[Example]]:
    """Shuffle the article keys with ``seed``; part i takes the next counts[i] articles; parts keep input order."""
    keys = list(dict.fromkeys(_article_key(example) for example in examples))
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    part_of: dict[tuple[str, str], int] = {}
    position = 0
    for part, count in enumerate(counts):
        for key_index in order[position:position + count]:
            part_of[keys[key_index]] = part
        position += count
    parts: list[list[Example]] = [[] for _ in counts]
    for example in examples:
        part = part_of.get(_article_key(example))
        if part is not None:
            parts[part].append(example)
    return parts


def _article_count(examples: list[Example]) -> int:
    return len({_article_key(example) for example in examples})


def split_by_article(examples: list[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out round(eval_fraction·n_articles) whole articles (at least 1 when eval_fraction > 0) as eval.

    Articles are titles (untitled examples: their context). Deterministic for a seed; both parts keep input order.
    """
    if eval_fraction <= 0:
        return list(examples), []
    articles = _article_count(examples)
    eval_count = max(1, round(articles * eval_fraction))
    if eval_count >= articles:
        raise UserError(
            f"data.eval_fraction={eval_fraction} of {articles} articles leaves no article to train on; "
            "lower it or add data"
        )
    held, train = _split_by_counts(examples, [eval_count, articles - eval_count], seed)
    return train, held


def split_articles(examples: list[Example], fractions: list[float], seed: int) -> list[list[Example]]:
    """len(fractions) disjoint parts of whole articles, part i with round(fractions[i]·n_articles) of them.

    A positive fraction gets at least one article. When the fractions sum to 1 the last part takes every article
    left after rounding; when they sum to less, the rest is dropped. E.g. [0.45, 0.45, 0.1] for teacher/student/eval.
    """
    if not fractions or any(not 0 <= f <= 1 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise UserError(f"split fractions {fractions} must be in [0, 1] and sum to at most 1; fix them")
    articles = _article_count(examples)
    counts = [max(1, round(articles * f)) if f > 0 else 0 for f in fractions]
    if math.isclose(sum(fractions), 1.0, abs_tol=1e-9) and fractions[-1] > 0:
        counts[-1] = articles - sum(counts[:-1])
    if sum(counts) > articles or min(counts) < 0 or any(c == 0 < f for c, f in zip(counts, fractions)):
        raise UserError(
            f"split fractions {fractions} need more than the {articles} articles there are; "
            "use fewer parts or more data"
        )
    return _split_by_counts(examples, counts, seed)
