"""On-policy training in the engine: per-token reverse KL on replayed samples, terms chosen by batch kind, one-line
config errors, and a resumed run that replays exactly the same student samples."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig

import lmdistill
from lmdistill.config import DataConfig, SamplingConfig, parse_config
from lmdistill.data.collate import batches_for_epoch
from lmdistill.errors import UserError
from lmdistill.models.loading import load_tokenizer
from lmdistill.models.pruning import student_from_teacher
from lmdistill.tasks import causal as causal_task
from lmdistill.tasks import get_task
from lmdistill.tasks.causal_rollout import student_rollout
from lmdistill.train.transforms import rollout_row_seeds
from robust_helpers import VOCAB, llama_config, tiny_config, tiny_data, tiny_tokenizer_dir  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLING = {"temperature": 1.0, "max_new_tokens": 5}


def _first_batch(raw, tokenizer_dir):
    task, tokenizer = get_task("causal_lm"), load_tokenizer(str(tokenizer_dir))
    examples, _ = task.load_datasets(DataConfig(**raw["data"]), tokenizer, raw["seed"])
    order = batches_for_epoch(len(examples), raw["train"]["batch_size"], raw["seed"], 0)[0]
    return task.collate([examples[j] for j in order], tokenizer.pad_token_id)


def _teacher_and_student(raw):
    torch.manual_seed(raw["seed"])
    settings = {k: v for k, v in raw["teacher"]["config"].items() if k != "model_type"}
    teacher = AutoModelForCausalLM.from_config(LlamaConfig(**settings)).eval()
    return teacher, student_from_teacher(teacher, raw["student"]["from_teacher"]["layers"])


def _run_config(tmp_path, tokenizer_dir, data, **sections):
    train = {"max_steps": 1, "batch_size": 4, "log_every": 1, "progress": False, **sections.pop("train", {})}
    return tiny_config(tmp_path, tokenizer_dir, data, teacher={"config": llama_config(VOCAB, initializer_range=0.5)},
                       train=train, **sections)


@pytest.mark.parametrize("fused", [False, True])
def test_step_one_loss_is_the_mean_log_ratio_on_the_replayed_samples(tmp_path, tiny_tokenizer_dir, tiny_data, fused):
    """λ = 1, token_reverse_kl alone: the logged loss is mean(log p_s(y) − log p_t(y)) over the sampled tokens,
    computed here from the models' full logits (the fused path computes it chunk by chunk from hidden states)."""
    raw = _run_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data,
                      objective=[{"name": "token_reverse_kl", "batches": "samples"}],
                      on_policy={"lmbda": 1.0, "sampling": SAMPLING},
                      train={"fused_vocab_threshold": 1 if fused else 8192})
    lmdistill.distill(raw)
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    teacher, student = _teacher_and_student(raw)
    tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    first = _first_batch(raw, tiny_tokenizer_dir)
    seeds = rollout_row_seeds(raw["seed"], 0, 0, 0, first["input_ids"].shape[0])
    batch = student_rollout(student, [first], row_seeds=[seeds], pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, sampling=SamplingConfig(**SAMPLING))[0]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        log_t = torch.log_softmax(teacher(**inputs).logits[:, :-1].double(), -1)
        log_s = torch.log_softmax(student(**inputs).logits[:, :-1].double(), -1)
    targets = batch["labels"][:, 1:]
    valid = targets != -100
    index = targets.clamp(min=0)[..., None]
    delta = (log_s.gather(-1, index) - log_t.gather(-1, index))[..., 0]
    assert 4 <= int(valid.sum()) <= 4 * 5
    assert logged["loss"] == pytest.approx(float(delta[valid].mean()), rel=1e-4)
    assert logged["loss/token_reverse_kl"] == pytest.approx(logged["loss"])


def test_terms_on_samples_and_on_data_split_the_batches(tmp_path, tiny_tokenizer_dir, tiny_data):
    """λ = 1: every batch holds student samples, so an `batches: data` term never enters; λ = 0 the reverse."""
    objective = [{"name": "reverse_kl", "batches": "samples"}, {"name": "forward_kl", "batches": "data"}]
    train = {"max_steps": 2}
    sampled = _run_config(tmp_path / "sampled", tiny_tokenizer_dir, tiny_data, objective=objective, train=train,
                          on_policy={"lmbda": 1.0, "sampling": SAMPLING})
    lmdistill.distill(sampled)
    data = _run_config(tmp_path / "data", tiny_tokenizer_dir, tiny_data, objective=objective, train=train,
                       on_policy={"lmbda": 0.0, "sampling": SAMPLING})
    lmdistill.distill(data)
    for name, present, absent in (("sampled", "reverse_kl", "forward_kl"), ("data", "forward_kl", "reverse_kl")):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert all(f"loss/{present}" in row and f"loss/{absent}" not in row for row in rows)
        assert all(row["loss"] == pytest.approx(row[f"loss/{present}"]) for row in rows)
    # λ = 0 never samples: its data-only run equals a plain forward-KL run
    plain = _run_config(tmp_path / "plain", tiny_tokenizer_dir, tiny_data, objective=[{"name": "forward_kl"}], train=train)
    lmdistill.distill(plain)
    a, b = (load_file(str(tmp_path / name / "student" / "model.safetensors")) for name in ("data", "plain"))
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("changes, message", [
    ({"objective": [{"name": "forward_kl", "batches": "samples"}]}, "add on_policy"),
    ({"objective": [{"name": "token_reverse_kl"}], "on_policy": {"lmbda": 0.5}}, "set batches: samples"),
    ({"objective": [{"name": "token_reverse_kl", "batches": "samples"}], "on_policy": {"lmbda": 0.5}}, "add a term with batches: data"),
    ({"objective": [{"name": "forward_kl", "batches": "data"}], "on_policy": {"lmbda": 0.5}}, "add a term with batches: samples"),
])
def test_batch_selection_mistakes_are_one_line_errors(tmp_path, tiny_tokenizer_dir, tiny_data, changes, message):
    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, **changes)
    with pytest.raises(UserError, match=message):
        parse_config(raw)


def test_token_reverse_kl_alone_with_lmbda_one_needs_no_on(tmp_path, tiny_tokenizer_dir, tiny_data):
    parse_config(tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, objective=[{"name": "token_reverse_kl"}],
                             on_policy={"lmbda": 1.0}))


def test_a_resumed_on_policy_run_replays_the_same_samples(tmp_path, tiny_tokenizer_dir, tiny_data, monkeypatch):
    """λ = 0.5 over micro-batches: an interrupted and resumed run draws exactly the samples, in order, of the run
    that was never interrupted, and ends with the same weights."""
    drawn: list[list[torch.Tensor]] = []

    def recording_rollout(*args, **kwargs):
        batches = student_rollout(*args, **kwargs)
        drawn.append([batch["input_ids"].clone() for batch in batches])
        return batches

    monkeypatch.setattr(causal_task, "student_rollout", recording_rollout)
    settings = {"objective": [{"name": "token_reverse_kl", "batches": "samples"}, {"name": "forward_kl", "batches": "data"},
                              {"name": "ce", "weight": 0.1}],
                "on_policy": {"lmbda": 0.5, "sampling": SAMPLING},
                "train": {"max_steps": 6, "gradient_accumulation_steps": 2, "batch_size": 2}}
    lmdistill.distill(_run_config(tmp_path / "whole", tiny_tokenizer_dir, tiny_data, **settings))
    whole, drawn[:] = list(drawn), []
    assert 3 <= sum(len(step) for step in whole) <= 9  # λ = 0.5 of 12 micro-batches (a fixed, seeded draw)
    stopped = lmdistill.distill(_run_config(tmp_path / "resumed", tiny_tokenizer_dir, tiny_data, **settings), stop_after=3)
    assert stopped.stopped_early
    lmdistill.distill(_run_config(tmp_path / "resumed", tiny_tokenizer_dir, tiny_data, **settings), resume=True)
    assert len(drawn) == len(whole)
    assert all(len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b)) for a, b in zip(drawn, whole))
    a, b = (load_file(str(tmp_path / name / "student" / "model.safetensors")) for name in ("whole", "resumed"))
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_evaluation_during_training_scores_the_students_samples(tmp_path, tiny_tokenizer_dir, tiny_data):
    """train.eval_samples: each eval row holds the teacher NLL, distinct-2 and loop rate of the student's samples;
    the last one equals those metrics computed on the exported student (same prompts, same seeds)."""
    from lmdistill.eval.sample_quality import prompt_length, sample_quality

    raw = _run_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data,
                      objective=[{"name": "token_reverse_kl", "batches": "samples"}, {"name": "forward_kl", "batches": "data"}],
                      on_policy={"lmbda": 0.5, "sampling": SAMPLING},
                      train={"max_steps": 4, "eval_every": 2, "eval_samples": 3})
    raw["data"]["eval_fraction"] = 0.25
    lmdistill.distill(raw)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in rows if row["split"] == "eval"]
    assert [row["step"] for row in evals] == [2, 4]
    tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    _, held_out = get_task("causal_lm").load_datasets(DataConfig(**raw["data"]), tokenizer, raw["seed"])
    prompts = [example["input_ids"][:prompt_length(example)] for example in held_out[:3]]
    teacher, _ = _teacher_and_student(raw)
    student = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "student").eval()
    expected = sample_quality(student, teacher, prompts, sampling=SamplingConfig(**SAMPLING), seed=raw["seed"],
                              pad_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, batch_size=4, device="cpu")
    for key, value in expected.items():
        assert evals[-1][f"eval/{key}"] == pytest.approx(value, rel=1e-5)


def test_eval_samples_is_refused_for_a_task_that_does_not_continue_prompts(tmp_path, tiny_tokenizer_dir, tiny_data, capsys):
    from lmdistill.cli import main
    from robust_helpers import write_config

    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, task="sequence_classification",
                      data={"train": str(tiny_data), "text_field": "text", "label_field": "label"},
                      objective=[{"name": "ce"}], train={"max_steps": 1, "batch_size": 2, "eval_samples": 2})
    raw.pop("teacher"), raw.pop("student")
    raw["student"] = {"config": {"model_type": "bert", "vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 1,
                                 "num_attention_heads": 2, "intermediate_size": 32}}
    assert main(["train", "--config", str(write_config(tmp_path / "c.yaml", raw))]) == 2
    assert "train.eval_samples" in capsys.readouterr().err
