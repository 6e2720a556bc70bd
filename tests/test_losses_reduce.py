"""reduce(): the masked mean over valid positions, global-count normalisation, all-masked batches."""

import math

import torch

from lmdistill.losses import reduce
from lmdistill.losses.logits import forward_kl


def _batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(4, 6, 9, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 6, 9, generator=generator, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=generator) > 0.3
    mask[0, 0] = True
    return student, teacher, mask


def test_masked_mean_matches_loop():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    assert reduce(values, mask).item() == (1.0 + 3.0 + 6.0) / 3
    assert reduce(values).item() == 21.0 / 6


def test_masked_positions_change_nothing_even_nan():
    student, teacher, mask = _batch()
    per_position = forward_kl(student, teacher)
    poisoned = torch.where(mask, per_position, torch.full_like(per_position, math.nan))
    torch.testing.assert_close(reduce(poisoned, mask), reduce(per_position, mask), rtol=0, atol=0)
    changed_teacher = torch.where(mask[..., None], teacher, teacher + 100 * torch.randn_like(teacher))
    torch.testing.assert_close(reduce(forward_kl(student, changed_teacher), mask), reduce(per_position, mask))


def test_all_masked_gives_zero():
    values = torch.randn(3, 4, dtype=torch.float64)
    assert reduce(values, torch.zeros(3, 4, dtype=torch.bool)).item() == 0.0
    assert reduce(values, torch.zeros(3, 4, dtype=torch.bool), num_valid=torch.tensor(0)).item() == 0.0


def test_split_batch_with_global_count_equals_one_big_batch():
    student, teacher, mask = _batch()
    big = reduce(forward_kl(student, teacher), mask)
    (big_grad,) = torch.autograd.grad(big, student)

    num_valid = mask.sum()
    halves = [
        reduce(forward_kl(student[rows], teacher[rows]), mask[rows], num_valid=num_valid)
        for rows in (slice(0, 1), slice(1, 4))
    ]
    torch.testing.assert_close(halves[0] + halves[1], big, rtol=0, atol=1e-12)
    split_grad = sum(torch.autograd.grad(h, student)[0] for h in halves)
    torch.testing.assert_close(split_grad, big_grad, rtol=0, atol=1e-12)
