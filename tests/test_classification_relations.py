"""hidden_mmd (TextBrewer's MMD-style similarity loss) against a float64 loop over position pairs."""

from __future__ import annotations

import pytest
import torch

from lmdistill.losses import reduce, spec
from lmdistill.losses.relations import hidden_mmd


def _reference(student, teacher, mask):
    """Per query i: mean over real keys j of (h_s[i]·h_s[j]/d_s − h_t[i]·h_t[j]/d_t)², in plain loops."""
    batch, length, _ = student.shape
    out = torch.zeros(batch, length, dtype=torch.float64)
    for b in range(batch):
        for i in range(length):
            total, count = 0.0, 0
            for j in range(length):
                if mask[b, j]:
                    g_s = float(student[b, i] @ student[b, j]) / student.shape[-1]
                    g_t = float(teacher[b, i] @ teacher[b, j]) / teacher.shape[-1]
                    total, count = total + (g_s - g_t) ** 2, count + 1
            out[b, i] = total / count if count else 0.0
    return out


def test_hidden_mmd_equals_the_pairwise_reference_with_padding_and_different_widths():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(3, 5, 6, dtype=torch.float64, generator=generator)
    teacher = torch.randn(3, 5, 10, dtype=torch.float64, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(hidden_mmd(student, teacher, key_mask=mask), _reference(student, teacher, mask), rtol=1e-12, atol=1e-12)
    everything = torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(hidden_mmd(student, teacher), _reference(student, teacher, everything), rtol=1e-12, atol=1e-12)
    # Padded keys do not matter: changing a padded position's state leaves the real queries' values unchanged.
    changed = student.clone()
    changed[1, 4] += 100.0
    torch.testing.assert_close(hidden_mmd(changed, teacher, key_mask=mask)[1, :3], hidden_mmd(student, teacher, key_mask=mask)[1, :3])


def test_hidden_mmd_is_zero_for_identical_states_and_registered_as_hidden():
    states = torch.randn(2, 4, 8)
    assert hidden_mmd(states, states.clone()).abs().max() == 0
    assert spec("hidden_mmd").kind == "hidden" and spec("hidden_mmd").params == {}


def test_reduced_value_matches_mean_over_real_queries():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64), torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    expected = _reference(student, teacher, mask)[mask].mean()
    assert float(reduce(hidden_mmd(student, teacher, key_mask=mask), mask)) == pytest.approx(float(expected), rel=1e-12)
