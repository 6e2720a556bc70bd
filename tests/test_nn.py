"""lmdistill.nn: module wrappers equal the functional loss + reduce; aliases come from the registry; Objective sums."""

from __future__ import annotations

import math

import pytest
import torch

import lmdistill.nn as lnn
from lmdistill.errors import UserError
from lmdistill.losses import get, names, reduce, spec
from lmdistill.losses.attention import AttentionCapture

B, S, V, H, HEADS, D = 2, 5, 7, 6, 3, 4


def _rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def mask():
    return torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)


def _capture(seed):
    return AttentionCapture(query=_rand(B, HEADS, S, D, seed=seed), key=_rand(B, HEADS, S, D, seed=seed + 1),
                            value=_rand(B, HEADS, S, D, seed=seed + 2), scores=_rand(B, HEADS, S, S, seed=seed + 3))


LOGIT_CASES = [("forward_kl", {"temperature": 2.0}), ("reverse_kl", {}), ("jsd", {"beta": 0.3, "temperature": 1.5}),
               ("tvd", {}), ("adaptive_kl", {"mu": 0.4}), ("skew_forward_kl", {"alpha": 0.2})]


@pytest.mark.parametrize("name,params", LOGIT_CASES)
def test_logit_modules_equal_function_plus_reduce(name, params, mask):
    student, teacher = _rand(B, S, V, seed=1), _rand(B, S, V, seed=2)
    module = lnn.DistillationLoss(name, **params)
    expected = reduce(get(name)(student, teacher, **params), mask)
    assert torch.equal(module(student, teacher, mask=mask), expected)
    alias = getattr(lnn, lnn.class_name(name))(**params)
    assert torch.equal(alias(student, teacher, mask=mask), expected)


def test_forward_kl_module_against_hand_formula(mask):
    student, teacher = _rand(B, S, V, seed=3), _rand(B, S, V, seed=4)
    p, q = torch.softmax(teacher / 2.0, -1), torch.softmax(student / 2.0, -1)
    per_position = 4.0 * (p * (p.log() - q.log())).sum(-1)
    expected = per_position[mask].sum() / mask.sum()
    torch.testing.assert_close(lnn.ForwardKL(temperature=2.0)(student, teacher, mask=mask), expected, rtol=1e-12, atol=1e-12)


def test_label_module_masks_ignored_labels_by_default():
    student = _rand(B, S, V, seed=5)
    labels = torch.tensor([[1, 2, -100, 3, -100], [0, -100, 6, 6, 5]])
    expected = torch.nn.functional.cross_entropy(student.reshape(-1, V), labels.reshape(-1), label_smoothing=0.1)
    torch.testing.assert_close(lnn.CE(label_smoothing=0.1)(student, labels), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(lnn.CE(label_smoothing=0.1)(student, labels), reduce(get("ce")(student, labels, label_smoothing=0.1), labels != -100))


@pytest.mark.parametrize("name", ["hidden_mse", "hidden_cosine", "hidden_mmd"])
def test_hidden_modules_equal_function_plus_reduce(name, mask):
    student, teacher = _rand(B, S, H, seed=6), _rand(B, S, H, seed=7)
    key_mask = {"key_mask": mask} if name == "hidden_mmd" else {}  # its relations exclude padded keys too
    expected = reduce(get(name)(student, teacher, **key_mask), mask, num_valid=11.0)
    assert torch.equal(getattr(lnn, lnn.class_name(name))()(student, teacher, mask=mask, num_valid=11.0), expected)


def test_hidden_mse_module_against_hand_formula(mask):
    student, teacher = _rand(B, S, H, seed=8), _rand(B, S, H, seed=9)
    expected = sum(((student[b, s] - teacher[b, s]) ** 2).mean() for b in range(B) for s in range(S) if mask[b, s]) / int(mask.sum())
    torch.testing.assert_close(lnn.HiddenMSE()(student, teacher, mask=mask), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,params", [("attention_kl", {"temperature": 2.0}), ("attention_mse", {}),
                                         ("minilm", {}), ("minilm_v2", {"num_relation_heads": 2})])
def test_attention_modules_equal_function_plus_reduce(name, params, mask):
    student, teacher = _capture(10), _capture(20)
    expected = reduce(get(name)(student, teacher, key_mask=mask, **params), mask)
    # The query mask doubles as the key mask for self-attention.
    assert torch.equal(lnn.DistillationLoss(name, **params)(student, teacher, mask=mask), expected)


def test_attention_module_accepts_raw_score_tensors(mask):
    student, teacher = _rand(B, HEADS, S, S, seed=30), _rand(B, HEADS, S, S, seed=31)
    log_s = torch.log_softmax(student.masked_fill(~mask[:, None, None, :], -math.inf), -1)
    log_t = torch.log_softmax(teacher.masked_fill(~mask[:, None, None, :], -math.inf), -1)
    p = log_t.exp()
    per_query = torch.where(p > 0, p * (log_t - log_s), torch.zeros_like(p)).sum(-1).mean(1)
    expected = per_query[mask].sum() / mask.sum()
    torch.testing.assert_close(lnn.AttentionKL()(student, teacher, mask=mask), expected, rtol=1e-12, atol=1e-12)


def test_every_registered_loss_has_an_alias_with_its_parameters():
    for name in names():
        alias = getattr(lnn, lnn.class_name(name))
        assert alias.loss_name == name and issubclass(alias, lnn.DistillationLoss)
        assert alias().params == spec(name).params
    assert {"ForwardKL", "ReverseKL", "JSD", "HiddenMSE", "AttentionKL", "MiniLMV2"} <= set(lnn.__all__)
    assert lnn.class_name("skew_reverse_kl") == "SkewReverseKL"


def test_unknown_parameter_and_name_are_user_errors():
    with pytest.raises(UserError, match="valid parameters: scale_by_temperature_squared, temperature"):
        lnn.ForwardKL(beta=0.5)
    with pytest.raises(UserError, match="unknown loss 'nope'"):
        lnn.DistillationLoss("nope")
    with pytest.raises(UserError, match="takes 2 tensors"):
        lnn.ForwardKL()(_rand(2, 3, seed=0))


def test_objective_is_the_weighted_sum_of_its_terms(mask):
    student_logits, teacher_logits = _rand(B, S, V, seed=40), _rand(B, S, V, seed=41)
    labels = torch.tensor([[1, 2, 3, 4, 5], [6, 0, 1, 2, 3]])
    student_hidden, teacher_hidden = _rand(B, S, H, seed=42), _rand(B, S, H, seed=43)
    objective = lnn.Objective([
        ("kd", 0.5, lnn.ForwardKL(temperature=2.0)),
        ("ce", 0.25, lnn.CE()),
        ("hidden", 3.0, lnn.HiddenMSE()),
        ("hidden_2", 1.0, lnn.HiddenMSE()),
    ])
    total, values = objective(mask=mask, student_logits=student_logits, teacher_logits=teacher_logits, labels=labels,
                              student_hidden=student_hidden, teacher_hidden=teacher_hidden,
                              hidden_2=(student_hidden * 2, teacher_hidden))
    expected = {
        "kd": reduce(get("forward_kl")(student_logits, teacher_logits, temperature=2.0), mask),
        "ce": reduce(get("ce")(student_logits, labels), mask),
        "hidden": reduce(get("hidden_mse")(student_hidden, teacher_hidden), mask),
        "hidden_2": reduce(get("hidden_mse")(student_hidden * 2, teacher_hidden), mask),
    }
    assert values.keys() == expected.keys()
    for name in expected:
        assert torch.equal(values[name], expected[name])
    assert torch.equal(total, 0.5 * expected["kd"] + 0.25 * expected["ce"] + 3.0 * expected["hidden"] + 1.0 * expected["hidden_2"])


def test_objective_errors_name_the_fix():
    with pytest.raises(UserError, match="unique"):
        lnn.Objective([("a", 1.0, lnn.CE()), ("a", 1.0, lnn.CE())])
    with pytest.raises(UserError, match="needs teacher_logits"):
        lnn.Objective([("kd", 1.0, lnn.ForwardKL())])(student_logits=_rand(1, 2, 3, seed=0))
