"""Metrics on generated text: ROUGE (rouge-score), BLEU and chrF (sacrebleu), GSM8K final-answer exact match.

``references`` may hold one string per prediction or a list of strings per prediction (several references).
Scales follow each metric's convention: ROUGE and exact match are fractions in [0, 1]; BLEU and chrF are 0-100.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

References = Sequence[str] | Sequence[Sequence[str]]

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _reference_lists(predictions: Sequence[str], references: References) -> list[list[str]]:
    """One list of references per prediction."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    lists = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
    if any(not refs for refs in lists):
        raise ValueError("every prediction needs at least one reference")
    return lists


def rouge(predictions: Sequence[str], references: References) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures over examples (rouge-score, Porter stemmer), each in [0, 1].

    With several references per prediction, each ROUGE type takes the best F-measure over the references.
    Returns ``{"rouge1": ..., "rouge2": ..., "rougeL": ...}``.
    """
    from rouge_score import rouge_scorer

    reference_lists = _reference_lists(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, reference_lists):
        scores = scorer.score_multi(refs, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: total / len(predictions) for name, total in totals.items()}


def _reference_streams(predictions: Sequence[str], references: References) -> list[list[str | None]]:
    """sacrebleu's layout: stream j holds the j-th reference of every segment, None where a segment has fewer."""
    reference_lists = _reference_lists(predictions, references)
    width = max(len(refs) for refs in reference_lists)
    return [[refs[j] if j < len(refs) else None for refs in reference_lists] for j in range(width)]


def bleu(predictions: Sequence[str], references: References) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, 4-grams, exponential smoothing), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(predictions), _reference_streams(predictions, references)).score)


def chrf(predictions: Sequence[str], references: References) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, β = 2), 0-100."""
    import sacrebleu

    return float(sacrebleu.corpus_chrf(list(predictions), _reference_streams(predictions, references)).score)


_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def _to_decimal(text: str) -> Decimal | None:
    cleaned = text.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def gsm8k_final_answer(text: str) -> Decimal | None:
    """The final numeric answer of a GSM8K-style solution, or None when there is no number.

    The first number after the last ``####``; without ``####``, the last number in the text.
    Commas, ``$`` and a trailing ``.`` are ignored, so "1,000.", "$1000" and "1000" are all 1000.
    """
    if "####" in text:
        numbers = _NUMBER.findall(text.rsplit("####", 1)[1])
        return _to_decimal(numbers[0]) if numbers else None
    numbers = _NUMBER.findall(text)
    return _to_decimal(numbers[-1]) if numbers else None


def gsm8k_exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions whose final number equals the reference's (numerically: "72.0" matches "72")."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    hits = 0
    for prediction, reference in zip(predictions, references):
        expected = gsm8k_final_answer(reference)
        hits += expected is not None and gsm8k_final_answer(prediction) == expected
    return hits / len(predictions)
