"""Depth pruning: which layers are kept, and that a pruned copy saves and reloads as a normal HF model."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from conftest import tiny_llama_config
from lmdistill.errors import UserError
from lmdistill.models.pruning import choose_layers, student_from_teacher


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"layers": [5, 0, 2]}, [0, 2, 5]),
        ({"every": 4}, [0, 4, 8, 12, 16, 20, 24, 28]),
        ({"first_last": 2}, [0, 1, 28, 29]),
        ({"count": 8}, [0, 4, 8, 12, 17, 21, 25, 29]),  # round(i*29/7), halves up: 4.14, 8.29, 12.43, 16.57 ...
        ({"count": 1}, [29]),
    ],
)
def test_choose_layers(kwargs, expected):
    assert choose_layers(30, **kwargs) == expected


@pytest.mark.parametrize("kwargs", [{"layers": [30]}, {"first_last": 16}, {"count": 31}])
def test_choose_layers_out_of_range(kwargs):
    with pytest.raises(UserError):
        choose_layers(30, **kwargs)


def test_pruned_student_reloads_and_matches_its_own_forward(tmp_path):
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(tiny_llama_config(vocab_size=97, layers=4)).eval()
    student = student_from_teacher(teacher, [1, 3]).eval()
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 97, (2, 7))
    torch.testing.assert_close(reloaded(ids).logits, student(ids).logits)
    # The teacher is untouched by pruning.
    assert len(teacher.model.layers) == 4
