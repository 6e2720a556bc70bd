"""Losses across vocabularies (ULD, GOLD-style hybrid, span log-prob matching) against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from lmdistill.errors import UserError
from lmdistill.losses import spec
from lmdistill.losses.cross_vocab import gold_hybrid, span_logprob_mse, uld
from lmdistill.losses.logits import forward_kl

STUDENT_P = [0.5, 0.3, 0.2]  # vocabulary of 3
TEACHER_P = [0.1, 0.6, 0.2, 0.1]  # vocabulary of 4


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


def test_uld_by_hand():
    # sorted, zero-padded: student .5 .3 .2 0, teacher .6 .2 .1 .1 -> |.1| + |.1| + |.1| + |.1|
    value = uld(logits_of(STUDENT_P), logits_of(TEACHER_P))
    assert value.item() == pytest.approx(0.4, abs=1e-12)
    # top_k=2: |.5-.6| + |.3-.2| + |rest .2 - rest .2|
    assert uld(logits_of(STUDENT_P), logits_of(TEACHER_P), top_k=2).item() == pytest.approx(0.2, abs=1e-12)
    # top_k beyond both vocabularies is the full sort
    assert uld(logits_of(STUDENT_P), logits_of(TEACHER_P), top_k=10).item() == pytest.approx(0.4, abs=1e-12)


def test_uld_is_blind_to_token_identity_and_zero_on_equal():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64)
    assert torch.allclose(uld(logits, logits), torch.zeros(2, 5, dtype=torch.float64))
    shuffled = logits[..., torch.randperm(7)]
    assert torch.allclose(uld(logits, shuffled), torch.zeros(2, 5, dtype=torch.float64), atol=1e-12)
    # padding a vocabulary with -inf (probability 0) changes nothing
    padded = torch.cat([logits, torch.full((2, 5, 3), -math.inf, dtype=torch.float64)], dim=-1)
    assert torch.allclose(uld(logits, padded), torch.zeros(2, 5, dtype=torch.float64), atol=1e-12)


def test_uld_temperature_and_gradient():
    student = logits_of(STUDENT_P).requires_grad_(True)
    teacher = logits_of(TEACHER_P)
    value = uld(student, teacher, temperature=2.0)
    soft_s = torch.softmax(logits_of(STUDENT_P) / 2, -1).sort(descending=True).values
    soft_t = torch.softmax(teacher / 2, -1).sort(descending=True).values
    assert value.item() == pytest.approx((torch.cat([soft_s, torch.zeros(1, dtype=torch.float64)]) - soft_t).abs().sum().item())
    value.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    with pytest.raises(UserError, match="temperature"):
        uld(student, teacher, temperature=0.0)
    with pytest.raises(UserError, match="top_k"):
        uld(student, teacher, top_k=0)


def test_gold_hybrid_by_hand():
    # map student 0 <-> teacher 1 and student 1 <-> teacher 3; rest buckets: student {2}: .2, teacher {0, 2}: .3
    token_map = (torch.tensor([0, 1]), torch.tensor([1, 3]))
    kl = 0.6 * math.log(0.6 / 0.5) + 0.1 * math.log(0.1 / 0.3) + 0.3 * math.log(0.3 / 0.2)
    # ULD on the unmapped mass: student (.2) vs teacher (.2, .1), sorted -> |.2-.2| + |0-.1|
    value = gold_hybrid(logits_of(STUDENT_P), logits_of(TEACHER_P), token_map=token_map, uld_weight=0.5)
    assert value.item() == pytest.approx(kl + 0.5 * 0.1, abs=1e-12)


def test_gold_hybrid_on_one_vocabulary_is_forward_kl():
    torch.manual_seed(1)
    student, teacher = torch.randn(3, 4, 11, dtype=torch.float64), torch.randn(3, 4, 11, dtype=torch.float64)
    expected = forward_kl(student, teacher, temperature=1.5, scale_by_temperature_squared=False)
    assert torch.allclose(gold_hybrid(student, teacher, temperature=1.5), expected, atol=1e-12)
    assert torch.allclose(gold_hybrid(teacher, teacher), torch.zeros(3, 4, dtype=torch.float64), atol=1e-12)


def test_gold_hybrid_gradient_is_finite_with_peaked_distributions():
    student = torch.tensor([[30.0, -30.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[-30.0, 30.0, 0.0, -math.inf]])
    value = gold_hybrid(student, teacher, token_map=(torch.tensor([0, 1]), torch.tensor([0, 1])))
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(student.grad).all()


def test_span_logprob_mse_by_hand():
    student = torch.tensor([math.log(0.2) + math.log(0.5), math.log(0.9)])  # a span of two student tokens, one of one
    teacher = torch.tensor([math.log(0.3), math.log(0.9)])
    expected = [0.5 * (math.log(0.1) - math.log(0.3)) ** 2, 0.0]
    assert span_logprob_mse(student, teacher).tolist() == pytest.approx(expected)


def test_registered_kinds_and_parameters():
    assert spec("uld").kind == "logits" and spec("uld").params == {"temperature": 1.0, "top_k": None}
    assert spec("gold_hybrid").params == {"temperature": 1.0, "uld_weight": 1.0, "top_k": None}  # token_map comes from the caller
    assert spec("span_logprob_mse").kind == "spans"
