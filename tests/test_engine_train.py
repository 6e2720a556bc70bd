"""The engine end to end on tiny random models: outputs, reload + generate, resume equivalence, determinism."""

from __future__ import annotations

import json

import pytest
import torch

from lmdistill.tasks import get_task
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import tiny_run_config
from lmdistill import distill
from lmdistill.errors import UserError


def _weights(student_dir) -> dict[str, torch.Tensor]:
    return load_file(str(student_dir / "model.safetensors"))


def test_run_writes_a_loadable_student_metrics_and_config(tmp_path, gpt2_tokenizer_dir):
    config = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir,
                             objective=[{"name": "forward_kl", "weight": 1.0}, {"name": "hidden_mse", "weight": 0.1, "layers": "uniform"}])
    result = distill(config)
    assert result.steps == 4 and result.skipped_steps == 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if line["split"] == "train"]
    assert [line["step"] for line in train_lines] == [1, 2, 3, 4]
    for line in train_lines:
        # The logged total is the weighted sum of the logged terms.
        assert line["loss"] == pytest.approx(1.0 * line["loss/forward_kl"] + 0.1 * line["loss/hidden_mse"], rel=1e-5)
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    student = AutoModelForCausalLM.from_pretrained(result.student_dir)
    assert student.config.num_hidden_layers == 2
    tokenizer = AutoTokenizer.from_pretrained(result.student_dir)
    prompt = tokenizer("Once upon a time", return_tensors="pt")
    generated = student.generate(**prompt, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert generated.shape[1] == prompt["input_ids"].shape[1] + 5


def test_pruned_student_starts_from_the_teachers_layers(tmp_path, gpt2_tokenizer_dir):
    """Steps=0 is not allowed, so check the copy on the model built by setup before training."""
    from lmdistill.config import parse_config
    from lmdistill.models.build import build_student, load_teacher

    config = parse_config(tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir))
    teacher = load_teacher(config.teachers[0], model_class=get_task("causal_lm").model_class, seed=0)
    student = build_student(config.student, teacher, model_class=get_task("causal_lm").model_class, seed=0)
    torch.testing.assert_close(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[3].mlp.up_proj.weight, rtol=0, atol=0)
    torch.testing.assert_close(student.model.layers[0].self_attn.q_proj.weight, teacher.model.layers[0].self_attn.q_proj.weight, rtol=0, atol=0)
    assert student.model.layers[1].self_attn.layer_idx == 1


@pytest.mark.parametrize("freeze, tied", [(True, False), (True, True), (False, True)])
def test_frozen_embeddings_keep_the_teachers_weights_while_the_layers_train(tmp_path, gpt2_tokenizer_dir, freeze, tied):
    from lmdistill.config import parse_config
    from lmdistill.models.build import load_teacher

    raw = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir, student={"from_teacher": {"layers": [0, 3]}, "freeze_embeddings": freeze})
    raw["teacher"]["config"]["tie_word_embeddings"] = tied
    teacher = load_teacher(parse_config(raw).teachers[0], model_class=get_task("causal_lm").model_class, seed=0)
    weights = _weights(distill(raw).student_dir)
    embeddings_kept = torch.equal(weights["model.embed_tokens.weight"], teacher.model.embed_tokens.weight)
    assert embeddings_kept is freeze
    assert not torch.equal(weights["model.layers.1.mlp.up_proj.weight"], teacher.model.layers[3].mlp.up_proj.weight)
    if not tied:  # an untied head is not an embedding: it trains
        assert not torch.equal(weights["lm_head.weight"], teacher.lm_head.weight)


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(tmp_path, gpt2_tokenizer_dir):
    train = {"max_steps": 6, "batch_size": 2, "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "warmup_steps": 2,
             "log_every": 1, "save_every": 2, "progress": False}
    objective = [{"name": "jsd", "weight": 1.0, "beta": 0.5}, {"name": "ce", "weight": 0.3}]
    straight = distill(tiny_run_config(tmp_path / "straight", gpt2_tokenizer_dir, train=train, objective=objective))
    stopped = distill(tiny_run_config(tmp_path / "resumed", gpt2_tokenizer_dir, train=train, objective=objective), stop_after=3)
    assert stopped.stopped_early and stopped.steps == 3
    resumed = distill(tiny_run_config(tmp_path / "resumed", gpt2_tokenizer_dir, train=train, objective=objective), resume=True)
    assert resumed.steps == 6
    expected, actual = _weights(straight.student_dir), _weights(resumed.student_dir)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6)
    # The metrics log has each step once, with the same losses as the uninterrupted run.
    def losses(run):
        return [json.loads(l)["loss"] for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert losses("resumed") == pytest.approx(losses("straight"), rel=1e-6)
    # The tokens trained so far are counted across the resume (the checkpoint carries them).
    def tokens(run):
        return [json.loads(l)["tokens"] for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines() if '"train"' in l]
    assert tokens("resumed") == tokens("straight")


def test_same_config_and_seed_give_identical_metrics(tmp_path, gpt2_tokenizer_dir):
    runs = []
    for name in ("a", "b"):
        distill(tiny_run_config(tmp_path / name, gpt2_tokenizer_dir))
        lines = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs.append([{k: v for k, v in line.items() if k not in ("tokens_per_second", "elapsed_s")} for line in lines])
    assert runs[0] == runs[1]


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, gpt2_tokenizer_dir):
    distill(tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir), stop_after=2)
    other = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir, seed=1)
    with pytest.raises(UserError, match="different run"):
        distill(other, resume=True)


def test_existing_checkpoints_without_resume_are_not_overwritten(tmp_path, gpt2_tokenizer_dir):
    distill(tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir), stop_after=2)
    with pytest.raises(UserError, match="--resume"):
        distill(tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir))


def test_on_policy_batches_are_student_samples(tmp_path, gpt2_tokenizer_dir):
    """With lmbda=1 every batch is replaced by student rollouts, so the distilled positions (and losses) change;
    with lmbda=0 the run equals a plain off-policy run."""
    base = dict(train={"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "log_every": 1, "progress": False},
                objective=[{"name": "reverse_kl", "weight": 1.0}])
    def losses(name, on_policy):
        config = tiny_run_config(tmp_path / name, gpt2_tokenizer_dir, **base)
        if on_policy is not None:
            config["on_policy"] = on_policy
        distill(config)
        return [json.loads(l)["loss"] for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    plain = losses("plain", None)
    never = losses("never", {"lmbda": 0.0})
    always = losses("always", {"lmbda": 1.0, "sampling": {"temperature": 1.0, "max_new_tokens": 6}})
    assert never == plain
    assert always != plain and all(value == value and value >= 0 for value in always)


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_trains_as_bf16_where_the_device_has_bf16_and_in_float32_elsewhere(tmp_path, gpt2_tokenizer_dir, monkeypatch, native):
    import lmdistill.train.precision as precision

    monkeypatch.setattr(precision, "native_bf16", lambda device_type: native)
    train = {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1, "progress": False}

    def losses(name: str, setting: str) -> list[float]:
        distill(tiny_run_config(tmp_path / name, gpt2_tokenizer_dir, train={**train, "precision": setting}))
        lines = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [line["loss"] for line in lines if line["split"] == "train"]

    auto, bf16, full = losses("auto", "auto"), losses("bf16", "bf16"), losses("no", "no")
    assert auto == (bf16 if native else full)
    assert bf16 != full  # the two settings do train differently, so the equality above tells them apart
