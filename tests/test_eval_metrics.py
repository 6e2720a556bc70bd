"""Token-level and classification metrics against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmdistill.eval.metrics import (
    accuracy,
    bits_per_byte,
    macro_f1,
    matthews_corrcoef,
    mean_token_kl,
    perplexity,
    token_kl_sum,
    token_nll_sum,
    top1_agreement,
    top1_match_count,
)


def test_token_nll_sum_two_positions_by_hand():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [50.0, -50.0, 7.0]]])
    labels = torch.tensor([[2, 0, -100]])
    nll_sum, count = token_nll_sum(logits, labels)
    expected = -math.log(math.exp(3) / (math.exp(1) + math.exp(2) + math.exp(3))) + math.log(3)
    assert count == 2
    assert nll_sum == pytest.approx(expected, rel=1e-6)
    assert perplexity(nll_sum, count) == pytest.approx(math.exp(expected / 2), rel=1e-6)


def test_token_nll_sum_custom_ignore_index_and_misaligned_shapes():
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0]]])
    nll_sum, count = token_nll_sum(logits, torch.tensor([[1, 7]]), ignore_index=7)
    assert count == 1
    assert nll_sum == pytest.approx(-math.log(0.75), rel=1e-6)
    with pytest.raises(ValueError, match="not aligned"):
        token_nll_sum(logits, torch.tensor([[1, 0, 1]]))


def test_perplexity_and_bits_per_byte_edges():
    assert perplexity(math.log(5.0) * 4, 4) == pytest.approx(5.0)
    assert math.isnan(perplexity(1.0, 0))
    assert perplexity(1e6, 1) == float("inf")
    assert bits_per_byte(math.log(2) * 12, 4) == pytest.approx(3.0)
    assert bits_per_byte(10.0, 5) == pytest.approx(10.0 / (0.6931471805599453 * 5))
    assert math.isnan(bits_per_byte(1.0, 0))


def test_top1_agreement_counts_only_valid_positions():
    student = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 9.0]]])
    teacher = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 2.0], [9.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    assert top1_match_count(student, teacher, mask) == (1, 2)
    assert top1_agreement(student, teacher, mask) == 0.5
    assert top1_agreement(student, teacher, torch.tensor([[1, 0, 0]])) == 1.0
    assert math.isnan(top1_agreement(student, teacher, torch.zeros(1, 3, dtype=torch.bool)))


def test_mean_token_kl_matches_float64_formula_and_ignores_masked_inf():
    torch.manual_seed(0)
    student = torch.randn(2, 4, 5)
    teacher = torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]], dtype=torch.bool)
    p_t = teacher.double().softmax(-1)
    p_s = student.double().softmax(-1)
    per_position = (p_t * (p_t.log() - p_s.log())).sum(-1)
    expected = per_position[mask].mean().item()
    student_with_inf = student.clone()
    student_with_inf[0, 2] = float("-inf")
    assert mean_token_kl(student_with_inf, teacher, mask) == pytest.approx(expected, rel=1e-5)
    kl_sum, count = token_kl_sum(student, teacher, mask)
    assert count == 6
    assert kl_sum == pytest.approx(per_position[mask].sum().item(), rel=1e-5)
    assert mean_token_kl(teacher, teacher, mask) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="shared vocabulary"):
        mean_token_kl(student[..., :4], teacher, mask)


def test_mean_token_kl_agrees_with_torch_kl_div_batchmean():
    torch.manual_seed(1)
    student = torch.randn(3, 7)
    teacher = torch.randn(3, 7)
    reference = F.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="batchmean")
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert mean_token_kl(student[None], teacher[None], mask) == pytest.approx(reference.item(), rel=1e-5)


# labels / predictions of a 3-class case worked by hand; confusion C[true][pred]:
# true 0 -> pred 0, 1; true 1 -> pred 1, 1; true 2 -> pred 2, 0
THREE_CLASS_LABELS = [0, 0, 1, 1, 2, 2]
THREE_CLASS_PREDICTIONS = [0, 1, 1, 1, 2, 0]


def test_accuracy_by_hand():
    assert accuracy(THREE_CLASS_PREDICTIONS, THREE_CLASS_LABELS) == pytest.approx(4 / 6)
    assert accuracy(torch.tensor([[1, 0]]), torch.tensor([1, 1])) == 0.5
    with pytest.raises(ValueError, match="2 predictions but 3 labels"):
        accuracy([1, 0], [1, 0, 1])


def test_macro_f1_by_hand():
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 2, FP 1, FN 0 -> 0.8; class 2: TP 1, FP 0, FN 1 -> 2/3
    expected = (0.5 + 0.8 + 2 / 3) / 3
    assert macro_f1(THREE_CLASS_PREDICTIONS, THREE_CLASS_LABELS) == pytest.approx(expected)
    # a class that is only ever predicted (never a label) still counts, with F1 0
    assert macro_f1([0, 2], [0, 0]) == pytest.approx((2 / 3 + 0.0) / 2)


def test_matthews_corrcoef_two_class_formula():
    labels = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    predictions = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    tp, fn, fp, tn = 3, 2, 1, 5
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(predictions, labels) == pytest.approx(expected)
    assert matthews_corrcoef(torch.tensor(labels), torch.tensor(labels)) == pytest.approx(1.0)
    assert matthews_corrcoef([1 - x for x in labels], labels) == pytest.approx(-1.0)


def test_matthews_corrcoef_three_class_by_hand():
    # c = 4, s = 6, t = (2, 2, 2), p = (2, 3, 1): (24 - 12) / sqrt((36 - 14)(36 - 12))
    expected = 12 / math.sqrt(22 * 24)
    assert matthews_corrcoef(THREE_CLASS_PREDICTIONS, THREE_CLASS_LABELS) == pytest.approx(expected)


def test_matthews_corrcoef_constant_prediction_is_zero():
    assert matthews_corrcoef([1, 1, 1], [0, 1, 2]) == 0.0
