"""Text-generation metrics against hand-computed values."""

import pytest

from lmdistill.eval.metrics import bleu, chrf, gsm8k_exact_match, gsm8k_final_answer, rouge

PREDICTION = "the cat sat on the mat"  # 6 tokens
REFERENCE = "The cat lay on a red mat."  # 7 tokens after lower-casing and dropping punctuation


def test_rouge_by_hand():
    scores = rouge([PREDICTION], [REFERENCE])
    # unigram overlap (clipped): the, cat, on, mat = 4 -> F = 2*4 / (6 + 7)
    assert scores["rouge1"] == pytest.approx(8 / 13)
    # bigrams 5 vs 6, only "the cat" shared -> F = 2*1 / (5 + 6)
    assert scores["rouge2"] == pytest.approx(2 / 11)
    # longest common subsequence: the cat on mat = 4
    assert scores["rougeL"] == pytest.approx(8 / 13)


def test_rouge_takes_best_reference_and_averages_examples():
    scores = rouge([PREDICTION, "a dog"], [["completely different words", REFERENCE], "a dog"])
    assert scores["rouge1"] == pytest.approx((8 / 13 + 1.0) / 2)
    assert scores["rougeL"] == pytest.approx((8 / 13 + 1.0) / 2)


def test_rouge_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge(["a", "b"], ["a"])


def test_bleu_and_chrf_of_identical_text_is_100():
    sentences = ["the quick brown fox jumps over the lazy dog", "a second and longer sentence to score here"]
    assert bleu(sentences, sentences) == pytest.approx(100.0)
    assert chrf(sentences, sentences) == pytest.approx(100.0)


def test_bleu_multi_reference_with_variable_counts():
    predictions = ["the quick brown fox jumps over the lazy dog", "nothing in common at all here"]
    references = [["wrong words entirely", "the quick brown fox jumps over the lazy dog"], ["totally unrelated text"]]
    single = bleu(predictions, ["the quick brown fox jumps over the lazy dog", "totally unrelated text"])
    assert bleu(predictions, references) == pytest.approx(single)
    assert 0.0 < single < 100.0


@pytest.mark.parametrize(
    ("prediction", "reference", "match"),
    [
        ("so the total is #### 1,000", "#### 1000", True),
        ("#### $1000.", "#### 1,000", True),
        ("She pays 5 + 3 = 8 dollars.", "#### 8", True),
        ("3 apples then 72.0", "#### 72", True),
        ("#### 7 (not 8)", "#### 7", True),
        ("#### 71", "#### 72", False),
        ("no number here", "#### 72", False),
        ("#### -3", "#### 3", False),
    ],
)
def test_gsm8k_exact_match_cases(prediction, reference, match):
    assert gsm8k_exact_match([prediction], [reference]) == float(match)


def test_gsm8k_exact_match_fraction_and_answer_extraction():
    predictions = ["#### 1,000", "the answer is 12", "#### 5"]
    references = ["Steps...\n#### 1000", "#### 12", "#### 6"]
    assert gsm8k_exact_match(predictions, references) == pytest.approx(2 / 3)
    assert str(gsm8k_final_answer("a 1,234.50 b #### $2,000.")) == "2000"
    assert gsm8k_final_answer("nothing") is None
