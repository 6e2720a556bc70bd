"""Sampling pieces: warping equals Hugging Face's warpers, per-row seeds, left padding."""

from __future__ import annotations

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lmdistill.config import SamplingConfig
from lmdistill.data.sampling import RowSampler, left_pad, row_seed, warp_scores


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.5, 7, 0.6), (2.0, 40, 0.95)])
def test_warp_scores_equals_hugging_face_warpers(temperature, top_k, top_p):
    torch.manual_seed(0)
    scores = torch.randn(6, 40) * 3
    scores[0, :3] = 10.0  # ties at the top
    expected = TemperatureLogitsWarper(temperature)(None, scores.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    expected = TopPLogitsWarper(top_p)(None, expected)
    actual = warp_scores(scores, SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p))
    assert torch.equal(torch.isinf(actual), torch.isinf(expected))
    assert torch.allclose(actual[~torch.isinf(actual)], expected[~torch.isinf(expected)], rtol=0, atol=1e-6)


def test_row_sampler_draws_by_inverse_cdf_from_each_rows_generator():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3], [0.0, 0.5, 0.0, 0.5]], dtype=torch.float64)
    sampling = SamplingConfig(temperature=1.0)
    sampler = RowSampler(sampling, [11, 12])
    out = sampler(None, probs.log().float())
    chosen = []
    for seed, row in zip([11, 12], probs):
        u = float(torch.rand(1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
        chosen.append(next(i for i, c in enumerate(row.cumsum(0).tolist()) if c > u))
    assert out.argmax(-1).tolist() == chosen
    assert torch.isinf(out).sum().item() == 2 * 3 and (out == 0).sum().item() == 2
    # zero-probability tokens are never drawn
    sampler = RowSampler(sampling, range(500))
    draws = sampler(None, probs[1:].expand(500, 4).log().float()).argmax(-1)
    assert set(draws.tolist()) == {1, 3}


def test_row_seed_and_left_pad():
    assert row_seed(0, 1, 2) == row_seed(0, 1, 2) != row_seed(0, 2, 1)
    assert 0 <= row_seed(5, 0, 0) < 2**63
    ids, mask = left_pad([[4, 5, 6], [7]], 0)
    assert ids.tolist() == [[4, 5, 6], [0, 0, 7]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
