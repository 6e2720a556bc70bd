"""Per-token reverse KL on sampled tokens: value, gradient, unbiasedness, and the chunked log-probabilities."""

from __future__ import annotations

import pytest
import torch

from lmdistill.losses import get, spec
from lmdistill.losses.fused_ce import chunked_linear_target_log_probs
from lmdistill.losses.sampled import target_log_probs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_registered_as_a_tokens_loss_without_parameters():
    assert spec("token_reverse_kl").kind == "tokens" and spec("token_reverse_kl").params == {}


def test_target_log_probs_equal_log_softmax_at_the_target():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7, dtype=torch.float64)
    targets = torch.tensor([[0, 6, 3], [2, -100, 5]])
    out = target_log_probs(logits, targets)
    for b in range(2):
        for s in range(3):
            if targets[b, s] >= 0:
                row = logits[b, s]
                assert float(out[b, s]) == pytest.approx(float(row[targets[b, s]] - torch.logsumexp(row, 0)), abs=1e-12)


def test_value_is_the_log_ratio_and_gradient_is_the_score_function_term():
    torch.manual_seed(1)
    student_logits = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    teacher_logits = torch.randn(5, 6, dtype=torch.float64)
    targets = torch.tensor([0, 3, 5, 1, 1])
    value = get("token_reverse_kl")(target_log_probs(student_logits, targets), target_log_probs(teacher_logits, targets))
    p_s, p_t = student_logits.detach().softmax(-1), teacher_logits.softmax(-1)
    rows = torch.arange(5)
    delta = (p_s[rows, targets].log() - p_t[rows, targets].log())
    torch.testing.assert_close(value.detach(), delta)
    value.sum().backward()
    # d log p_s(y) / dz = onehot(y) − p_s, times δ
    expected = delta[:, None] * (torch.nn.functional.one_hot(targets, 6).double() - p_s)
    torch.testing.assert_close(student_logits.grad, expected)


def test_expected_gradient_over_student_samples_is_the_reverse_kl_gradient():
    """Σ_y p_s(y)·∇(loss at y) = ∇ KL(p_s ‖ p_t), by enumerating every token (no Monte Carlo noise)."""
    torch.manual_seed(2)
    vocab = 5
    student_logits = torch.randn(vocab, dtype=torch.float64, requires_grad=True)
    teacher_logits = torch.randn(vocab, dtype=torch.float64)
    expected_gradient = torch.zeros(vocab, dtype=torch.float64)
    expected_value = 0.0
    p_s = student_logits.detach().softmax(-1)
    for y in range(vocab):
        target = torch.tensor([y])
        loss = get("token_reverse_kl")(target_log_probs(student_logits[None], target), target_log_probs(teacher_logits[None], target))
        (gradient,) = torch.autograd.grad(loss.sum(), student_logits)
        expected_gradient += p_s[y] * gradient
        expected_value += float(p_s[y] * loss.detach())
    kl = (student_logits.softmax(-1) * (student_logits.log_softmax(-1) - teacher_logits.log_softmax(-1))).sum()
    (kl_gradient,) = torch.autograd.grad(kl, student_logits)
    torch.testing.assert_close(expected_gradient, kl_gradient)
    assert expected_value == pytest.approx(float(kl.detach()), rel=1e-12)


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_chunked_linear_target_log_probs_equal_the_dense_ones_values_and_gradients(softcap):
    torch.manual_seed(3)
    hidden = torch.randn(2, 7, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (2, 7))
    targets[0, :2] = -100
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    chunked = chunked_linear_target_log_probs(hidden, weight, targets, bias=bias, mask=mask, logit_softcap=softcap, chunk_tokens=3)
    logits = hidden @ weight.T + bias
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    valid = mask & (targets != -100)
    dense = torch.where(valid, target_log_probs(logits, targets), torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(chunked.double(), dense.float().double(), atol=1e-6, rtol=1e-6)  # float32 inside
    assert chunked.dtype == torch.float32 and bool((chunked[~valid] == 0).all())
    upstream = torch.randn(2, 7, dtype=torch.float64)
    grads = torch.autograd.grad((chunked.double() * upstream).sum(), (hidden, weight, bias))
    dense_grads = torch.autograd.grad((dense * upstream).sum(), (hidden, weight, bias))
    for got, want in zip(grads, dense_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_chunked_target_log_probs_with_nothing_valid_are_zeros():
    out = chunked_linear_target_log_probs(torch.randn(3, 4), torch.randn(6, 4), torch.full((3,), -100))
    assert out.tolist() == [0.0, 0.0, 0.0]


def test_teacher_signals_give_the_log_probability_of_each_target():
    """Dense: log softmax at the target; a mixture: log of the weighted mean of its teachers' probabilities."""
    from lmdistill.objective import Features, Masks
    from lmdistill.teachers.live import DenseTeacherBatch
    from lmdistill.teachers.mixture import MixtureTeacherBatch

    torch.manual_seed(4)
    first, second = torch.randn(2, 3, 9, dtype=torch.float64), torch.randn(2, 3, 9, dtype=torch.float64)
    targets = torch.randint(0, 9, (2, 3))
    masks = Masks(loss=torch.ones(2, 3, dtype=torch.bool), tokens=torch.ones(2, 3, dtype=torch.bool), loss_count=6, token_count=6)
    dense = DenseTeacherBatch(Features(logits=first)).target_log_probs(targets, masks)
    torch.testing.assert_close(dense, first.log_softmax(-1).gather(-1, targets[..., None])[..., 0])
    mixed = MixtureTeacherBatch(Features(logits=first), [(3.0, first), (1.0, second)]).target_log_probs(targets, masks)
    p = 0.75 * first.softmax(-1) + 0.25 * second.softmax(-1)
    torch.testing.assert_close(mixed, p.gather(-1, targets[..., None])[..., 0].log())
