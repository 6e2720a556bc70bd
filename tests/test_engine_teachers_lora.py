"""Several teachers (probability-space mixture) and LoRA students in the engine."""

from __future__ import annotations

import json

import pytest
import torch

from lmdistill.tasks import get_task
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from conftest import tiny_run_config
from lmdistill import distill
from lmdistill.losses import get
from lmdistill.teachers import mix_teachers


def test_mixture_is_the_weighted_mean_of_tempered_distributions():
    torch.manual_seed(0)
    a, b = torch.randn(3, 11, dtype=torch.float64), torch.randn(3, 11, dtype=torch.float64)
    mixed = mix_teachers([(1.0, a), (3.0, b)], temperature=2.0)
    expected = 0.25 * torch.softmax(a / 2, -1) + 0.75 * torch.softmax(b / 2, -1)
    torch.testing.assert_close(torch.softmax(mixed / 2.0, -1), expected)
    # Identical teachers: the same loss as one teacher.
    student = torch.randn(3, 11, dtype=torch.float64)
    same = mix_teachers([(0.3, a), (0.7, a)], temperature=2.0)
    torch.testing.assert_close(get("forward_kl")(student, same, temperature=2.0), get("forward_kl")(student, a, temperature=2.0))


def _losses(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_two_identical_teachers_give_the_same_run_as_one(tmp_path, gpt2_tokenizer_dir):
    objective = [{"name": "forward_kl", "weight": 1.0, "temperature": 2.0}, {"name": "hidden_mse", "weight": 0.1}]
    # Several teachers always materialise logits; make the single-teacher run take the same path.
    train = {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1, "progress": False,
             "fused_vocab_threshold": 10**9}
    one = tiny_run_config(tmp_path / "one", gpt2_tokenizer_dir, objective=objective, train=train)
    two = tiny_run_config(tmp_path / "two", gpt2_tokenizer_dir, objective=objective, train=train)
    two["teacher"] = [dict(two["teacher"], weight=1.0), dict(two["teacher"], weight=2.0)]
    distill(one)
    distill(two)
    for a, b in zip(_losses(tmp_path / "one"), _losses(tmp_path / "two"), strict=True):
        for key in ("loss", "loss/forward_kl", "loss/hidden_mse"):
            # Exact in float64 (test above); in float32, log-probs over 50,257 tokens carry ~1e-6 absolute rounding,
            # which the mixture's extra log_softmax/logsumexp passes on to a KL of ~7e-3.
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key


def test_lora_student_trains_adapters_only(tmp_path, gpt2_tokenizer_dir):
    config = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir, objective=[{"name": "forward_kl", "weight": 1.0}])
    config["student"]["lora"] = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    config["train"]["learning_rate"] = 1e-2
    result = distill(config)
    merged = load_file(str(result.student_dir / "model.safetensors"))
    # The student before training is the pruned teacher: rebuild it to compare.
    from lmdistill.config import parse_config
    from lmdistill.models.build import load_teacher
    from lmdistill.models.pruning import student_from_teacher

    parsed = parse_config(config)
    initial = student_from_teacher(load_teacher(parsed.teachers[0], model_class=get_task("causal_lm").model_class, seed=0), [0, 3]).state_dict()
    changed = {name for name, value in merged.items() if not torch.equal(value, initial[name])}
    assert changed, "LoRA training changed nothing"
    assert all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed), sorted(changed)
    assert AutoModelForCausalLM.from_pretrained(result.student_dir).config.num_hidden_layers == 2


def test_lora_adapter_only_export(tmp_path, gpt2_tokenizer_dir):
    config = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir, objective=[{"name": "ce", "weight": 1.0}])
    config["student"]["lora"] = {"r": 2, "merge": False}
    config["train"]["max_steps"] = 1
    result = distill(config)
    assert (result.student_dir / "adapter_config.json").is_file()
    assert (result.student_dir / "adapter_model.safetensors").is_file()
