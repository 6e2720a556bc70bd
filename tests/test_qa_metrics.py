"""SQuAD metrics (official normalisation, EM, token F1, v2.0 breakdown) and logits -> answer post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmdistill.eval.squad import exact_match, f1, normalize_answer, postprocess, squad_scores

CONTEXT = "alpha beta gamma delta epsilon"
# [CLS] q [SEP] alpha beta gamma delta [SEP]: positions 3..6 are context words 0..3.
WINDOW_A = {"input_ids": [0] * 8, "example_index": 0,
            "offsets": [None, None, None, (0, 5), (6, 10), (11, 16), (17, 22), None]}
# The overflow window: [CLS] q [SEP] gamma delta epsilon [SEP].
WINDOW_B = {"input_ids": [0] * 7, "example_index": 0, "offsets": [None, None, None, (11, 16), (17, 22), (23, 30), None]}


def _example(id_, golds=(), context=CONTEXT):
    return {"id": id_, "title": "", "context": context, "question": "q?",
            "answers": {"text": list(golds), "answer_start": [context.find(g) for g in golds]}}


def test_normalize_answer_as_the_official_script():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("Theater's A-list") == "theaters alist"  # "the" inside a word stays
    assert normalize_answer("  ") == ""


def test_exact_match_and_f1_take_the_best_gold():
    assert exact_match("The Eiffel Tower.", ["tower", "Eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["tower", "Eiffel tower"]) == 0.0
    # vs "big cat": 2 common, P = 2/3, R = 1 -> 0.8; vs "black dog": P = 1/3, R = 1/2 -> 0.4
    assert f1("big black cat", ["black dog", "big cat"]) == pytest.approx(0.8)
    assert f1("big black cat", ["black dog"]) == pytest.approx(0.4)
    # common counts multiplicity: "cat cat cat" vs "cat" shares 1, P = 1/3, R = 1 -> 0.5
    assert f1("the cat cat, cat", ["a cat"]) == pytest.approx(0.5)
    assert f1("dog", ["cat"]) == 0.0


def test_an_unanswerable_gold_matches_only_an_empty_prediction():
    assert exact_match("", []) == 1.0 and f1("", []) == 1.0
    assert exact_match("Paris", []) == 0.0 and f1("Paris", []) == 0.0
    assert f1("the", []) == 1.0  # normalises to "", as in the v2.0 script
    assert f1("", ["Paris"]) == 0.0 and exact_match("", ["Paris"]) == 0.0


def test_squad_scores_with_the_v2_breakdown():
    examples = [_example("e1", ["Denver Broncos", "Broncos"]), _example("e2", ["big cat"]), _example("e3", ["1875"]),
                _example("e4"), _example("e5")]
    predictions = {"e1": "the Broncos", "e2": "big black cat", "e4": "", "e5": "Paris"}  # e3 missing
    scores = squad_scores(predictions, examples)
    # per example EM 1, 0, 0, 1, 0 and F1 1, 0.8, 0, 1, 0
    assert scores == pytest.approx({
        "exact_match": 40.0, "f1": 56.0, "HasAns_exact": 100 / 3, "HasAns_f1": 60.0, "NoAns_exact": 50.0,
        "NoAns_f1": 50.0, "HasAns_total": 3, "NoAns_total": 2,
    })
    assert squad_scores(predictions, examples[:3]) == pytest.approx({"exact_match": 100 / 3, "f1": 60.0})


def _logits(rows: list[list[float]], width: int = 10) -> torch.Tensor:
    """Rows padded with a huge logit past each window's length, which post-processing must ignore."""
    return torch.tensor([row + [100.0] * (width - len(row)) for row in rows])


START_A = [0, 10, 0, 3, 0, 5, 0, 0]
END_A = [0, 9, 0, 0, 6, 0, 2, 0]
# Pairs: (1, 1) = 19 is on the question and (5, 4) = 11 ends before it starts;
# legal: (3, 4) = 9, (5, 6) = 7, (3, 6) = 5.


def test_postprocess_picks_the_best_legal_span():
    examples, windows = [_example("x", ["alpha beta"])], [WINDOW_A]
    assert postprocess(examples, windows, _logits([START_A]), _logits([END_A])) == {"x": "alpha beta"}
    # length 1 only: (3, 3) = 3, (4, 4) = 6, (5, 5) = 5, (6, 6) = 2
    assert postprocess(examples, windows, _logits([START_A]), _logits([END_A]), max_answer_length=1) == {"x": "beta"}
    # n_best = 2 keeps starts {1, 5} and ends {1, 4}: no legal pair; n_best = 3 adds start 3 and end 6
    assert postprocess(examples, windows, _logits([START_A]), _logits([END_A]), n_best=2) == {"x": ""}
    assert postprocess(examples, windows, np.array([START_A]), np.array([END_A]), n_best=3) == {"x": "alpha beta"}


def test_postprocess_merges_the_windows_of_each_example():
    examples = [_example("x", ["delta epsilon"]), _example("y", ["beta"], context="alpha beta")]
    window_y = {"input_ids": [0] * 6, "example_index": 1, "offsets": [None, None, None, (0, 5), (6, 10), None]}
    starts = _logits([START_A, [0, 0, 0, 0, 8, 0, 0], [0, 0, 0, 1, 2, 0]])
    ends = _logits([END_A, [0, 0, 0, 0, 0, 4, 0], [0, 0, 0, 0, 3, 0]])
    # x: window A's best is 9 ("alpha beta"), window B's (4, 5) = 12 ("delta epsilon"); y: (4, 4) = 5 beats (3, 4) = 4
    predictions = postprocess(examples, [WINDOW_A, WINDOW_B, window_y], starts, ends)
    assert predictions == {"x": "delta epsilon", "y": "beta"}


def test_version_2_predicts_empty_when_the_null_score_wins_by_more_than_the_threshold():
    examples = [_example("x", [])]
    start, end = [2] + START_A[1:], [8] + END_A[1:]  # null 2 + 8 = 10, best span 9
    assert postprocess(examples, [WINDOW_A], _logits([start]), _logits([end]), version_2=True) == {"x": ""}
    assert postprocess(examples, [WINDOW_A], _logits([start]), _logits([end]), version_2=True,
                       null_threshold=1.0) == {"x": "alpha beta"}  # 10 - 9 = 1 is not more than 1
    assert postprocess(examples, [WINDOW_A], _logits([start]), _logits([end])) == {"x": "alpha beta"}
    # the null score is the minimum over windows: window B's null 0 + 3 = 3 < 9, so the span stands
    both = postprocess(examples, [WINDOW_A, WINDOW_B], _logits([start, [0] * 7]), _logits([end, [3] + [0] * 6]),
                       version_2=True)
    assert both == {"x": "alpha beta"}
