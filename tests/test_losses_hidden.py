"""Hidden-state losses and layer maps against plain-Python references; the seed article's objective."""

import math

import pytest
import torch

from lmdistill.errors import UserError
from lmdistill.losses import hidden as H
from lmdistill.losses import logits as L
from lmdistill.losses.layer_map import last_layer_map, uniform_layer_map

STUDENT_ROWS = [[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]
TEACHER_ROWS = [[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]]


def _tensors():
    return torch.tensor(STUDENT_ROWS, dtype=torch.float64), torch.tensor(TEACHER_ROWS, dtype=torch.float64)


def test_hidden_mse_matches_loop():
    got = H.hidden_mse(*_tensors())
    expected = [sum((s - t) ** 2 for s, t in zip(rs, rt)) / 3 for rs, rt in zip(STUDENT_ROWS, TEACHER_ROWS)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_hidden_cosine_matches_loop():
    got = H.hidden_cosine(*_tensors())
    expected = []
    for rs, rt in zip(STUDENT_ROWS, TEACHER_ROWS):
        dot = sum(s * t for s, t in zip(rs, rt))
        expected.append(1 - dot / (math.sqrt(sum(s * s for s in rs)) * math.sqrt(sum(t * t for t in rt))))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["hidden_mse", "hidden_cosine"])
def test_identical_hidden_states_give_zero(name):
    hidden = torch.randn(2, 5, 8, dtype=torch.float64)
    assert getattr(H, name)(hidden, hidden.clone()).abs().max() < 1e-12


@pytest.mark.parametrize("name", ["hidden_mse", "hidden_cosine"])
def test_width_mismatch_asks_for_a_projection(name):
    with pytest.raises(UserError, match="projection"):
        getattr(H, name)(torch.randn(2, 5, 8), torch.randn(2, 5, 16))


@pytest.mark.parametrize("name", ["hidden_mse", "hidden_cosine"])
def test_gradcheck(name):
    student = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(getattr(H, name), (student, teacher))


def test_uniform_layer_map_values():
    assert uniform_layer_map(4, 12) == [(0, 2), (1, 5), (2, 8), (3, 11)]
    assert uniform_layer_map(3, 4) == [(0, 0), (1, 2), (2, 3)]
    assert uniform_layer_map(6, 6) == [(i, i) for i in range(6)]
    # (0 + 1) * 5 / 2 = 2.5 rounds half-up to 3 (Python's round() would give 2): teacher layer 2.
    assert uniform_layer_map(2, 5) == [(0, 2), (1, 4)]


def test_uniform_layer_map_matches_formula_everywhere():
    for student_layers in range(1, 13):
        for teacher_layers in range(student_layers, 49):
            expected = [
                (i, int(math.floor((i + 1) * teacher_layers / student_layers + 0.5)) - 1)
                for i in range(student_layers)
            ]
            assert uniform_layer_map(student_layers, teacher_layers) == expected


def test_last_layer_map_and_bad_depths():
    assert last_layer_map(4, 12) == [(3, 11)]
    with pytest.raises(UserError):
        uniform_layer_map(6, 3)
    with pytest.raises(UserError):
        last_layer_map(0, 3)


def test_seed_article_objective():
    """L = a·KL(p_s ‖ p_t) + (1 − a)·(1/N)·Σ_i ‖h_s^i − h_t^i‖², per position.

    hidden_mse is a mean over H, the article's squared norm is a sum over H, hence the factor H.
    """
    torch.manual_seed(0)
    a, num_layers, width = 0.3, 3, 8
    student_logits, teacher_logits = torch.randn(2, 5, 11, dtype=torch.float64), torch.randn(2, 5, 11, dtype=torch.float64)
    student_hidden = [torch.randn(2, 5, width, dtype=torch.float64) for _ in range(num_layers)]
    teacher_hidden = [torch.randn(2, 5, width, dtype=torch.float64) for _ in range(num_layers)]

    p_s, p_t = torch.softmax(student_logits, -1), torch.softmax(teacher_logits, -1)
    article_kl = (p_s * (p_s.log() - p_t.log())).sum(-1)
    article_hidden = sum(((hs - ht) ** 2).sum(-1) for hs, ht in zip(student_hidden, teacher_hidden)) / num_layers
    article = a * article_kl + (1 - a) * article_hidden

    ours_hidden = torch.stack([H.hidden_mse(hs, ht) * width for hs, ht in zip(student_hidden, teacher_hidden)])
    ours = a * L.reverse_kl(student_logits, teacher_logits) + (1 - a) * ours_hidden.mean(0)
    torch.testing.assert_close(ours, article, rtol=0, atol=1e-10)
