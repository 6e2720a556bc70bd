"""Sparse (top-k + tail) teacher divergences: exact at k = V against the live losses, bucketed references below."""

from __future__ import annotations

import math

import pytest
import torch

from lmdistill.errors import UserError
from lmdistill.losses import get
from lmdistill.losses.sparse import SPARSE_LOSSES, SparseTeacher, sparse_forward_kl, sparse_from_logits, sparse_version

PARAMS = {"jsd": [{"beta": 0.0}, {"beta": 0.3}, {"beta": 1.0}], "skew_forward_kl": [{"alpha": 0.2}], "skew_reverse_kl": [{"alpha": 0.2}]}
CASES = [(name, params) for name in SPARSE_LOSSES for params in PARAMS.get(name, [{}])]


def _logits(*shape, seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


@pytest.mark.parametrize("name,params", CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_full_k_equals_the_live_loss_in_value_and_gradient(name, params, temperature):
    student = _logits(2, 3, 11, seed=1).requires_grad_(True)
    teacher_logits = _logits(2, 3, 11, seed=2)
    live = get(name)(student, teacher_logits, temperature=temperature, **params)
    (live_grad,) = torch.autograd.grad(live.sum(), student)
    sparse = SPARSE_LOSSES[name](student, sparse_from_logits(teacher_logits, 11), temperature=temperature, **params)
    (sparse_grad,) = torch.autograd.grad(sparse.sum(), student)
    torch.testing.assert_close(sparse, live, rtol=0, atol=1e-6)
    torch.testing.assert_close(sparse_grad, live_grad, rtol=0, atol=1e-6)
    assert torch.isfinite(sparse_grad).all()


def test_sparse_from_logits_keeps_top_k_and_the_exact_tail():
    logits = torch.tensor([[0.0, 3.0, 1.0, -2.0, 2.0]], dtype=torch.float64)
    sparse = sparse_from_logits(logits, 2)
    probs = torch.softmax(logits, -1)[0]
    assert sparse.token_ids.tolist() == [[1, 4]] and sparse.token_ids.dtype == torch.int32
    torch.testing.assert_close(sparse.log_probs[0], probs[[1, 4]].log(), rtol=0, atol=1e-12)
    torch.testing.assert_close(sparse.tail_log_mass[0], (probs[0] + probs[2] + probs[3]).log(), rtol=0, atol=1e-12)
    assert sparse_from_logits(logits, 5).tail_log_mass.item() == -math.inf


def _bucketed(probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Aggregate a full distribution (..., V) into (k ids, tail) buckets by explicit sums."""
    at_ids = probs.gather(-1, ids)
    return torch.cat([at_ids, (probs.sum(-1) - at_ids.sum(-1)).unsqueeze(-1)], dim=-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_top_k_forward_kl_is_the_kl_between_bucketed_distributions_when_the_tail_is_uniform(temperature):
    """With a flat teacher tail the uniform-tail temperature rule is exact, so the loss is KL over aggregated buckets."""
    student = _logits(4, 9, seed=3)
    teacher_logits = _logits(4, 9, seed=4)
    teacher_logits[..., 3:] = -1.5  # every row: 3 distinct large-ish logits then a flat tail (ties kept out of top-3)
    teacher_logits[..., :3] = teacher_logits[..., :3].abs() + 0.5
    sparse = sparse_from_logits(teacher_logits, 3)
    p = _bucketed(torch.softmax(teacher_logits / temperature, -1), sparse.token_ids.long())
    q = _bucketed(torch.softmax(student / temperature, -1), sparse.token_ids.long())
    expected = (p * (p.log() - q.log())).sum(-1) * temperature**2
    torch.testing.assert_close(sparse_forward_kl(student, sparse, temperature=temperature), expected, rtol=0, atol=1e-10)


def test_tail_temperature_assumes_a_uniform_tail():
    """Hand value: teacher top-1 p=0.6, tail 0.4 over V-k=3 tokens, T=2: tempered tail = 3·(0.4/3)^(1/2)."""
    teacher = SparseTeacher(torch.tensor([[math.log(0.6)]], dtype=torch.float64), torch.tensor([[0]], dtype=torch.int32),
                            torch.tensor([math.log(0.4)], dtype=torch.float64))
    student = torch.zeros(1, 4, dtype=torch.float64)  # uniform: q = (1/4, 3/4) over the buckets at any T
    head, tail = math.sqrt(0.6), 3 * math.sqrt(0.4 / 3)
    p = torch.tensor([head, tail], dtype=torch.float64) / (head + tail)
    q = torch.tensor([0.25, 0.75], dtype=torch.float64)
    expected = (p * (p / q).log()).sum() * 4.0
    torch.testing.assert_close(sparse_forward_kl(student, teacher, temperature=2.0)[0], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,params", CASES)
def test_top_k_losses_approach_the_live_loss_as_k_grows_and_are_never_negative(name, params):
    vocab = 64
    student = _logits(3, 5, vocab, seed=5, scale=2.0)
    teacher_logits = _logits(3, 5, vocab, seed=6, scale=4.0)
    live = get(name)(student, teacher_logits, temperature=1.0, **params)
    errors = []
    for k in (1, 4, 16, 48, vocab):
        sparse = SPARSE_LOSSES[name](student, sparse_from_logits(teacher_logits, k), temperature=1.0, **params)
        assert (sparse >= -1e-12).all()
        errors.append((sparse - live).abs().mean().item())
    assert errors[-1] < 1e-9
    assert errors[2] < errors[0] and errors[3] < errors[1]


def test_float32_student_logits_compute_in_float32_and_padding_rows_stay_finite():
    student = _logits(2, 6, seed=7).float().requires_grad_(True)
    pad = SparseTeacher(torch.full((2, 3), -math.log(3.0)), torch.arange(3, dtype=torch.int32).expand(2, 3).contiguous(),
                        torch.full((2,), -math.inf))
    loss = sparse_forward_kl(student, pad, temperature=2.0)
    (grad,) = torch.autograd.grad(loss.sum(), student)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_losses_without_a_sparse_version_and_bad_shapes_are_user_errors():
    with pytest.raises(UserError, match="logit_mse.*teacher cache"):
        sparse_version("logit_mse")
    teacher = sparse_from_logits(_logits(2, 5, seed=8), 2)
    with pytest.raises(UserError, match="does not fit"):
        sparse_forward_kl(_logits(3, 5, seed=9), teacher)
    with pytest.raises(UserError, match="temperature"):
        sparse_forward_kl(_logits(2, 5, seed=9), teacher, temperature=0.0)
