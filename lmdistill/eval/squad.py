"""Extractive QA evaluation: window logits -> answer strings, and SQuAD exact match / F1 (official scripts).

Metrics follow the official SQuAD evaluation: v1.1's answer normalisation and token F1, v2.0's rule for empty
answers (gold answers that normalise to nothing are dropped; with none left the gold is "", which only an empty
prediction matches) and its ``HasAns_*`` / ``NoAns_*`` breakdown.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import torch

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, remove punctuation, remove the articles a/an/the, collapse whitespace (SQuAD v1.1 script)."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _golds(golds: Sequence[str]) -> list[str]:
    kept = [gold for gold in golds if normalize_answer(gold)]
    return kept or [""]


def _f1_one(prediction: str, gold: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    same = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """max over golds of [normalize(prediction) == normalize(gold)]; no golds means the gold "" (unanswerable)."""
    normalized = normalize_answer(prediction)
    return max(float(normalized == normalize_answer(gold)) for gold in _golds(golds))


def f1(prediction: str, golds: Sequence[str]) -> float:
    """max over golds of token F1 = 2·P·R / (P + R), P = common/|prediction tokens|, R = common/|gold tokens|.

    Tokens are the whitespace-split normalised answers; common counts shared tokens with multiplicity. An empty
    side scores 1 if both are empty, else 0; no golds means the gold "" (unanswerable).
    """
    return max(_f1_one(prediction, gold) for gold in _golds(golds))


def squad_scores(predictions: dict[str, str], examples: list[dict[str, Any]]) -> dict[str, float]:
    """Means over examples ×100 of ``exact_match`` and ``f1``; a missing prediction counts as "".

    When any example is unanswerable (no gold answers) also ``HasAns_exact``, ``HasAns_f1``, ``NoAns_exact``,
    ``NoAns_f1`` (×100, 0 for an empty group) and the counts ``HasAns_total``, ``NoAns_total`` (v2.0 script).
    """
    if not examples:
        raise ValueError("no examples to score")
    groups: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for example in examples:
        golds = example["answers"]["text"]
        prediction = predictions.get(example["id"], "")
        groups[bool(golds)].append((exact_match(prediction, golds), f1(prediction, golds)))

    def mean(scores: list[tuple[float, float]], which: int) -> float:
        return 100.0 * sum(score[which] for score in scores) / len(scores) if scores else 0.0

    every = groups[True] + groups[False]
    result: dict[str, float] = {"exact_match": mean(every, 0), "f1": mean(every, 1)}
    if groups[False]:
        result.update({
            "HasAns_exact": mean(groups[True], 0), "HasAns_f1": mean(groups[True], 1),
            "NoAns_exact": mean(groups[False], 0), "NoAns_f1": mean(groups[False], 1),
            "HasAns_total": len(groups[True]), "NoAns_total": len(groups[False]),
        })
    return result


def _as_float_tensor(logits: Any) -> torch.Tensor:
    tensor = logits.detach() if isinstance(logits, torch.Tensor) else torch.as_tensor(logits)
    return tensor.to(device="cpu", dtype=torch.float64)


def _best_span(window: dict[str, Any], start: torch.Tensor, end: torch.Tensor, n_best: int,
               max_answer_length: int) -> tuple[float, int, int] | None:
    """(score, start, end) of the best legal pair among the n_best start × n_best end indices, or None."""
    offsets = window["offsets"]
    # Stable sort: equal logits keep index order, so ties resolve the same on every run.
    starts = torch.argsort(start, descending=True, stable=True)[:n_best].tolist()
    ends = torch.argsort(end, descending=True, stable=True)[:n_best].tolist()
    best = None
    for start_index in starts:
        if offsets[start_index] is None:
            continue
        for end_index in ends:
            if offsets[end_index] is None or end_index < start_index:
                continue
            if end_index - start_index + 1 > max_answer_length:
                continue
            score = float(start[start_index] + end[end_index])
            if best is None or score > best[0]:
                best = (score, start_index, end_index)
    return best


def postprocess(
    examples: list[dict[str, Any]], windows: list[dict[str, Any]], start_logits: Any, end_logits: Any, *,
    n_best: int = 20, max_answer_length: int = 30, null_threshold: float = 0.0, version_2: bool = False,
) -> dict[str, str]:
    """Each example's answer text from its windows' logits (Hugging Face run_qa post-processing).

    start_logits, end_logits: (num_windows, S) tensors or arrays aligned with ``windows``, S at least the longest
    window (positions past a window's length are ignored). In each window the n_best start and end indices form
    pairs, kept when both are context tokens, end ≥ start and end − start + 1 ≤ max_answer_length; score =
    start_logit + end_logit, text = context[offsets[start][0]:offsets[end][1]]; the best pair over all windows of an
    example wins. With ``version_2`` the answer is "" when min over windows of (start_logit[0] + end_logit[0])
    exceeds the best score by more than ``null_threshold``. No legal pair gives "".
    """
    start_all, end_all = _as_float_tensor(start_logits), _as_float_tensor(end_logits)
    assert start_all.shape == end_all.shape and start_all.shape[0] == len(windows), (start_all.shape, len(windows))
    by_example: dict[int, list[int]] = defaultdict(list)
    for row, window in enumerate(windows):
        by_example[window["example_index"]].append(row)
    predictions = {}
    for example_index, example in enumerate(examples):
        best, best_text, null_score = None, "", None
        for row in by_example.get(example_index, []):
            length = len(windows[row]["input_ids"])
            start, end = start_all[row, :length], end_all[row, :length]
            window_null = float(start[0] + end[0])
            null_score = window_null if null_score is None else min(null_score, window_null)
            span = _best_span(windows[row], start, end, n_best, max_answer_length)
            if span is not None and (best is None or span[0] > best):
                offsets = windows[row]["offsets"]
                best, best_text = span[0], example["context"][offsets[span[1]][0]:offsets[span[2]][1]]
        if version_2 and best is not None and null_score is not None and null_score - best > null_threshold:
            best_text = ""
        predictions[example["id"]] = best_text
    return predictions
