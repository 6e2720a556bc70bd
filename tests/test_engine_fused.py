"""Large vocabularies: the engine's fused path (no full logits) gives the same losses and gradients as logits."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_run_config
from lmdistill import distill
from lmdistill.losses import get, reduce
from lmdistill.losses.fused_ce import chunked_linear_cross_entropy


def test_chunked_cross_entropy_equals_cross_entropy_on_logits():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 7, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (3, 5))
    targets[0, 1] = -100
    mask = torch.rand(3, 5) > 0.3
    got = chunked_linear_cross_entropy(hidden, weight, targets, mask=mask, chunk_tokens=4)
    valid = mask & (targets != -100)
    logits = hidden @ weight.T
    expected = F.cross_entropy(logits[valid], targets[valid], reduction="sum") / valid.sum()
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad(got, (hidden, weight))
    expected_grads = torch.autograd.grad(expected, (hidden, weight))
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b)
    # The global denominator replaces the local count, as in reduce.
    torch.testing.assert_close(chunked_linear_cross_entropy(hidden, weight, targets, mask=mask, num_valid=20),
                               reduce(get("ce")(logits, targets), valid, num_valid=20))


def test_fused_engine_run_matches_the_materialised_run(tmp_path, gpt2_tokenizer_dir):
    """Same config twice: vocab 50,257 above and below the fused threshold; identical losses and weights."""
    objective = [{"name": "jsd", "weight": 1.0, "beta": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]
    runs = {}
    for name, threshold in (("fused", 1000), ("logits", 10**9)):
        train = {"max_steps": 3, "batch_size": 2, "learning_rate": 1e-3, "log_every": 1, "progress": False,
                 "fused_vocab_threshold": threshold}
        runs[name] = distill(tiny_run_config(tmp_path / name, gpt2_tokenizer_dir, train=train, objective=objective))
    def logged(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    for fused, materialised in zip(logged("fused"), logged("logits"), strict=True):
        # float32 sums over 50,257 entries: agree to ~1e-7 absolute (the JSD here is ~2e-4).
        for key in ("loss", "loss/jsd", "loss/ce"):
            assert fused[key] == pytest.approx(materialised[key], rel=1e-5, abs=1e-6), key
    from safetensors.torch import load_file
    a = load_file(str(runs["fused"].student_dir / "model.safetensors"))
    b = load_file(str(runs["logits"].student_dir / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)
