"""Metrics of the student's own samples: distinct-2, loops and the teacher's NLL of the samples, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaForCausalLM

from conftest import tiny_llama_config
from lmdistill.config import SamplingConfig
from lmdistill.data.sampling import row_seed, sample_continuations
from lmdistill.eval.sample_quality import distinct_n, loops, sample_quality, teacher_nll_of_samples

pytestmark = pytest.mark.usefixtures("one_thread")


def test_distinct_2_counts_unique_bigrams_over_all_samples():
    # bigrams: (1,2) (2,3) (3,1) (1,2) | (2,3) | none: 5 in all, 3 unique
    assert distinct_n([[1, 2, 3, 1, 2], [2, 3], [7]], 2) == pytest.approx(3 / 5)
    assert distinct_n([[4, 5, 6]], 1) == 1.0 and distinct_n([[4, 4, 4, 4]], 1) == 0.25
    assert distinct_n([[1], []], 2) == 0.0


@pytest.mark.parametrize("tokens, expected", [
    ([1] * 8, True),  # one token eight times
    ([1] * 7, False),  # under the 8-token span
    ([1, 2, 3] * 3, True),  # three copies of a 3-token block (9 tokens)
    ([1, 2, 3] * 2 + [1, 2], False),  # 2.7 copies
    ([1, 2] * 3, False),  # three copies but only 6 tokens
    ([5, 6, 7, 8] + [1, 2] * 4, True),  # a loop at the end of ordinary text
    ([1, 2, 3, 4, 5] * 2, False),  # a phrase said twice
    ([1, 2, 3, 4] * 3, True),
    (list(range(30)), False),
    ([], False),
])
def test_loops(tokens, expected):
    assert loops(tokens) is expected


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(tiny_llama_config(vocab_size=40, layers=2)).eval()
    torch.manual_seed(1)
    student = LlamaForCausalLM(tiny_llama_config(vocab_size=40, layers=1)).eval()
    return teacher, student


def _nll_by_hand(teacher, prompt, sample):
    with torch.no_grad():
        log_probs = torch.log_softmax(teacher(torch.tensor([prompt + sample])).logits[0].double(), -1)
    return [-float(log_probs[len(prompt) - 1 + i, token]) for i, token in enumerate(sample)]


def test_teacher_nll_of_samples_is_the_mean_over_sampled_tokens(models):
    teacher, _ = models
    prompts, samples = [[3, 4, 5], [6], [7, 8]], [[9, 10], [11, 12, 13], []]
    nll, count = teacher_nll_of_samples(teacher, prompts, samples, pad_id=0, batch_size=2, device="cpu")
    by_hand = [v for p, s in zip(prompts, samples) if s for v in _nll_by_hand(teacher, p, s)]
    assert count == 5 and nll == pytest.approx(sum(by_hand) / 5, rel=1e-5)


def test_sample_quality_scores_the_seeded_samples(models):
    teacher, student = models
    prompts = [[3, 4, 5], [6, 7], [8], [9, 10, 11, 12]]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=6)
    scores = sample_quality(student, teacher, prompts, sampling=sampling, seed=5, pad_id=0, eos_token_id=None,
                            batch_size=3, device="cpu")
    # each row alone, with its documented seed
    samples = [sample_continuations(student, [p], [row_seed(5, i)], sampling, pad_token_id=0, eos_token_id=None)[0]
               for i, p in enumerate(prompts)]
    nlls = [v for p, s in zip(prompts, samples) for v in _nll_by_hand(teacher, p, s)]
    assert scores["teacher_nll_of_samples"] == pytest.approx(sum(nlls) / len(nlls), rel=1e-5)
    assert scores["distinct_2"] == pytest.approx(distinct_n(samples, 2))
    assert scores["loop_rate"] == sum(loops(s) for s in samples) / 4
    assert scores["sample_tokens"] == 6.0
    assert scores == sample_quality(student, teacher, prompts, sampling=sampling, seed=5, pad_id=0, eos_token_id=None,
                                    batch_size=3, device="cpu")  # seeded: the same every evaluation
    greedy_teacher = sample_quality(teacher, teacher, prompts, sampling=SamplingConfig(temperature=0, max_new_tokens=6),
                                    seed=0, pad_id=0, eos_token_id=None, batch_size=4, device="cpu")
    assert math.isfinite(greedy_teacher["teacher_nll_of_samples"])
