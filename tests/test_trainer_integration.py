"""DistillationTrainer: the Trainer's loss equals the engine's on the same batch; terms logged; LoRA trains adapters only."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaForCausalLM

from conftest import tiny_llama_config
from lmdistill.config import TermConfig
from lmdistill.data.collate import collate_causal
from lmdistill.errors import UserError
from lmdistill.integrations import DistillationTrainer, DistillationTrainingArguments
from lmdistill.models import capture as attention_capture
from lmdistill.tasks import get_task
from lmdistill.objective import forward_features
from lmdistill.objective import Masks, build_terms, compute_terms, needs_of, projection_widths, total_loss
from lmdistill.models.build import StudentBundle
from lmdistill.teachers.live import DenseTeacherBatch

VOCAB = 97
OBJECTIVE = [
    {"name": "forward_kl", "weight": 0.5, "temperature": 2.0},
    {"name": "ce", "weight": 0.5},
    {"name": "hidden_mse", "weight": 0.3},
    {"name": "attention_kl", "weight": 0.2, "layers": "last"},
]


def _models(student_hidden=16):
    models = []
    for seed, layers, hidden in [(0, 4, 32), (1, 2, student_hidden)]:
        config = tiny_llama_config(VOCAB, layers=layers, hidden=hidden, heads=4, kv_heads=2)
        config.initializer_range = 0.2  # peaked attention and logits, so every term is far from 0
        torch.manual_seed(seed)
        models.append(LlamaForCausalLM(config))
    return models


def _examples(count=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(count):
        ids = torch.randint(1, VOCAB, (5 + 2 * index,), generator=generator).tolist()
        labels = list(ids)
        labels[:2] = [-100, -100]  # a prompt: not in the loss
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def _args(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path / "out"), objective=OBJECTIVE, report_to="none", use_cpu=True, seed=0,
                    per_device_train_batch_size=2, learning_rate=1e-3, logging_steps=1, save_strategy="no",
                    remove_unused_columns=False, disable_tqdm=True)
    settings.update(overrides)
    return DistillationTrainingArguments(**settings)


def _engine_loss(teacher, student, batch, projections_state):
    """The engine's loss for one batch, computed the way lmdistill.train.loop does (one process, no accumulation)."""
    terms = build_terms([TermConfig(**term) for term in OBJECTIVE], student_layers=2, teacher_layers=4)
    needs = needs_of(terms)
    attention_capture.enable_capture(student)
    attention_capture.enable_capture(teacher)
    bundle = StudentBundle(student, projection_widths(terms, student.config.hidden_size, teacher.config.hidden_size))
    bundle.projections.load_state_dict(projections_state)
    task = get_task("causal_lm")
    teacher_features = forward_features(teacher, batch, needs, task, grad=False)
    student_features = forward_features(bundle, batch, needs, task, grad=True)
    targets, loss_mask = task.targets(batch)
    masks = Masks(loss=loss_mask, tokens=batch["attention_mask"].bool(),
                  loss_count=loss_mask.sum().float(), token_count=batch["attention_mask"].sum().float())
    values = compute_terms(terms, student_features, DenseTeacherBatch(teacher_features), targets, masks, bundle.projections, 0.0)
    return total_loss(terms, values, 0.0), values


def test_trainer_loss_equals_engine_loss_on_the_same_batch(tmp_path):
    teacher, student = _models()
    batch = collate_causal(_examples(), pad_token_id=0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=_args(tmp_path),
                                  train_dataset=_examples(), data_collator=lambda rows: collate_causal(rows, 0))
    assert set(trainer.projections) == {"hidden_mse"}  # 16 -> 32
    student.train()
    trainer_loss = trainer.compute_loss(student, dict(batch))
    engine_loss, engine_values = _engine_loss(copy.deepcopy(teacher), copy.deepcopy(student), batch, trainer.projections.state_dict())
    assert all(value.item() > 1e-3 for value in engine_values.values()), engine_values  # every term contributes
    assert abs(trainer_loss.item() - engine_loss.item()) < 1e-6
    expected = sum(w * float(engine_values[n]) for n, w in [("forward_kl", 0.5), ("ce", 0.5), ("hidden_mse", 0.3), ("attention_kl", 0.2)])
    assert trainer_loss.item() == pytest.approx(expected, abs=1e-6)
    assert not trainer.teacher_model.training and not any(p.requires_grad for p in trainer.teacher_model.parameters())


def test_accumulated_training_logs_each_term_equal_to_the_engine_on_the_global_batch(tmp_path):
    teacher, student = _models()
    engine_teacher, engine_student = copy.deepcopy(teacher), copy.deepcopy(student)
    args = _args(tmp_path, gradient_accumulation_steps=2, max_steps=1, learning_rate=1e-9)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=_examples(),
                                  data_collator=lambda rows: collate_causal(rows, 0))
    projections_state = copy.deepcopy(trainer.projections.state_dict())
    trainer.train()
    logged = trainer.state.log_history[0]
    # The 4 examples are the one global batch (2 micro-batches of 2): normalised by its counts, order does not matter.
    _, engine_values = _engine_loss(engine_teacher, engine_student, collate_causal(_examples(), 0), projections_state)
    for label, value in engine_values.items():
        assert logged[f"loss/{label}"] == pytest.approx(float(value), abs=1e-6)


def test_lora_student_trains_only_its_adapters(tmp_path):
    from peft import LoraConfig, get_peft_model

    teacher, student = _models(student_hidden=32)
    student = get_peft_model(student, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    args = _args(tmp_path, max_steps=3, learning_rate=1e-2,
                 objective=[{"name": "forward_kl", "weight": 1.0, "temperature": 2.0}, {"name": "hidden_mse", "weight": 1.0}])
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=_examples(),
                                  data_collator=lambda rows: collate_causal(rows, 0))
    assert trainer.projections is None  # equal widths
    trainer.train()
    after = student.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_A" in k for k in changed) and any("lora_B" in k for k in changed)
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())


def test_bad_objective_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no parameter 'beta'"):
        _args(tmp_path, objective=[{"name": "forward_kl", "beta": 0.5}])
    with pytest.raises(UserError, match="non-empty list"):
        _args(tmp_path, objective=[])
    with pytest.raises(UserError, match="`layers` applies to hidden/attention terms only"):
        _args(tmp_path, objective=[{"name": "ce", "layers": "last"}])
