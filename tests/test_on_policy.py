"""On-policy rollouts: prompts kept, labels exactly the generated tokens (cut after EOS), seeded, mode restored; λ draws."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaForCausalLM

from conftest import tiny_llama_config
from lmdistill.config import SamplingConfig
from lmdistill.data.collate import collate_causal
from lmdistill.tasks.causal_rollout import prompt_lengths, student_rollout
from lmdistill.train.transforms import rollout_row_seeds, should_use_student_samples

pytestmark = pytest.mark.usefixtures("one_thread")

PAD = 0
# (input ids, index of the first loss label); the third row's loss starts at 0, so its prompt is its first token
ROWS = [([5, 9, 11, 3, 7, 8, 2], 3), ([4, 6, 10, 12, 14], 2), ([13, 15, 17, 19], 0), ([21, 22, 23, 24, 25, 26, 27, 28], 5)]


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(vocab_size=48, layers=2))


def make_batch():
    examples = [{"input_ids": ids, "labels": [-100] * start + ids[start:]} for ids, start in ROWS]
    return collate_causal(examples, PAD)


def expected_prompts():
    return [ids[: max(start, 1)] for ids, start in ROWS]


def seeds_for(seed, rows=len(ROWS)):
    return [list(range(seed * 1000, seed * 1000 + rows))]


def rollout(student, eos, *, seed=7, **sampling):
    settings = {"temperature": 1.0, "max_new_tokens": 9, **sampling}
    return student_rollout(student, [make_batch()], row_seeds=seeds_for(seed), pad_token_id=PAD, eos_token_id=eos,
                           sampling=SamplingConfig(**settings))[0]


def split(out, row, prompt_length):
    length = int(out["attention_mask"][row].sum())
    return out["input_ids"][row, :prompt_length].tolist(), out["input_ids"][row, prompt_length:length].tolist(), length


def test_prompt_lengths_from_labels():
    batch = make_batch()
    assert prompt_lengths(batch["labels"], batch["attention_mask"]) == [3, 2, 1, 5]
    no_labels = torch.full((1, 4), -100)
    assert prompt_lengths(no_labels, torch.tensor([[1, 1, 1, 0]])) == [3]


def test_rollout_keeps_prompts_and_labels_exactly_the_generated_tokens(student):
    out = rollout(student, eos=None)
    prompts = expected_prompts()
    width = max(len(p) for p in prompts) + 9
    assert out["input_ids"].shape[1] <= width
    generated_rows = []
    for row, prompt in enumerate(prompts):
        kept, generated, length = split(out, row, len(prompt))
        generated_rows.append(generated)
        assert kept == prompt and len(generated) == 9  # no EOS: always max_new_tokens
        assert out["labels"][row].tolist() == [-100] * len(prompt) + generated + [-100] * (out["labels"].shape[1] - length)
        assert out["attention_mask"][row].tolist() == [1] * length + [0] * (out["attention_mask"].shape[1] - length)
        assert out["input_ids"][row, length:].tolist() == [PAD] * (out["input_ids"].shape[1] - length)
    # the model's own generation_config EOS (2, LlamaConfig's default) was sampled but does not stop a rollout
    assert student.generation_config.eos_token_id == 2 and any(2 in generated for generated in generated_rows)


def test_generated_eos_is_labelled_and_nothing_after_it(student):
    free = rollout(student, eos=None)
    prompts = expected_prompts()
    _, generated, _ = split(free, 0, len(prompts[0]))
    eos = generated[3]
    out = rollout(student, eos=eos)  # same seeds: each row is the free rollout cut after its first `eos`
    ended = 0
    for row, prompt in enumerate(prompts):
        _, free_generated, _ = split(free, row, len(prompt))
        expected = free_generated[: free_generated.index(eos) + 1] if eos in free_generated else free_generated
        kept, generated, length = split(out, row, len(prompt))
        assert (kept, generated) == (prompt, expected)
        assert [t for t in out["labels"][row].tolist() if t != -100] == expected
        ended += eos in free_generated
    assert ended >= 1 and out["labels"][0].tolist().count(-100) > free["labels"][0].tolist().count(-100)


def test_greedy_rollout_equals_an_unpadded_argmax_loop(student):
    out = rollout(student, eos=None, temperature=0.0, max_new_tokens=5)
    with torch.no_grad():
        for row, prompt in enumerate(expected_prompts()):
            ids = list(prompt)
            for _ in range(5):
                ids.append(int(student(torch.tensor([ids])).logits[0, -1].argmax()))
            assert split(out, row, len(prompt))[1] == ids[len(prompt):]


def test_seeded_and_restores_the_training_mode(student):
    student.train()
    first, second = rollout(student, eos=None), rollout(student, eos=None)
    assert student.training
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["input_ids"], rollout(student, eos=None, seed=8)["input_ids"])
    student.eval()
    rollout(student, eos=None)
    assert not student.training
    # several batches sampled in one call: each row gets what it gets alone with its own seed
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=9)
    together = student_rollout(student, [make_batch(), make_batch()], row_seeds=seeds_for(7) + seeds_for(8),
                               pad_token_id=PAD, eos_token_id=None, sampling=sampling)
    alone = [student_rollout(student, [make_batch()], row_seeds=seeds_for(s), pad_token_id=PAD, eos_token_id=None,
                             sampling=sampling)[0] for s in (7, 8)]
    for joint, single in zip(together, alone):
        assert all(torch.equal(joint[k], single[k]) for k in single)
    assert not torch.equal(together[0]["input_ids"], together[1]["input_ids"])


def test_rollout_row_seeds_depend_only_on_the_micro_batch_position():
    first = rollout_row_seeds(3, 5, 1, 0, 4)
    assert first == rollout_row_seeds(3, 5, 1, 0, 4) and len(set(first)) == 4
    assert rollout_row_seeds(3, 5, 1, 0, 2) == first[:2]  # the generator draws row by row
    assert len({tuple(rollout_row_seeds(*position, 4)) for position in [(3, 5, 1, 0), (4, 5, 1, 0), (3, 6, 1, 0),
                                                                       (3, 5, 0, 0), (3, 5, 1, 1)]}) == 5


def test_should_use_student_samples_frequency_and_determinism():
    draws = [should_use_student_samples(3, step, micro, 0.3) for step in range(5000) for micro in range(2)]
    n = len(draws)
    assert abs(sum(draws) / n - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    assert draws == [should_use_student_samples(3, step, micro, 0.3) for step in range(5000) for micro in range(2)]
    other_seed = [should_use_student_samples(4, step, micro, 0.3) for step in range(5000) for micro in range(2)]
    assert other_seed != draws
    assert not any(should_use_student_samples(0, step, 0, 0.0) for step in range(1000))
    assert all(should_use_student_samples(0, step, 0, 1.0) for step in range(1000))
    # monotone in λ: the same draw u decides every λ (u < λ)
    assert all(should_use_student_samples(1, s, 0, 0.6) for s in range(2000) if should_use_student_samples(1, s, 0, 0.4))
