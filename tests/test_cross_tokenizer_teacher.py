"""A teacher with its own tokenizer: the signal against an independent computation, its errors, and whole runs
(CLI, resume, chat with assistant-only loss, LoRA, on-policy) with tiny random models and real, different tokenizers."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import tiny_run_config
from lmdistill import distill
from lmdistill.cli import main
from lmdistill.config import RunConfig, TermConfig
from lmdistill.data.alignment import teacher_view
from lmdistill.data.token_bytes import TokenBytes
from lmdistill.errors import UserError
from lmdistill.losses import spec
from lmdistill.objective import Features, Masks, Needs, build_terms, compute_terms
from lmdistill.tasks import get_task
from lmdistill.teachers import CrossTokenizerTeacher, LiveTeacher

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["Once upon a time, a little fox 🦊 ran.", " Tom said: héllo 日本!", "ok"]


def tiny_llama(vocab: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def pair(gpt2_tokenizer, spm_tokenizer):
    student, teacher = tiny_llama(len(gpt2_tokenizer), 0).double(), tiny_llama(32000, 1).double()
    task = get_task("causal_lm")
    examples = [{"input_ids": (ids := gpt2_tokenizer(text)["input_ids"] + [gpt2_tokenizer.eos_token_id]), "labels": list(ids)}
                for text in TEXTS]
    examples[1]["labels"][:4] = [-100] * 4  # a prompt outside the loss
    batch = task.collate(examples, gpt2_tokenizer.eos_token_id)
    signal = CrossTokenizerTeacher(teacher, spm_tokenizer, gpt2_tokenizer)
    targets, loss_mask = task.targets(batch)
    with torch.no_grad():
        student_logits = task.output_logits(student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]), batch)
    masks = Masks(loss=loss_mask, tokens=batch["attention_mask"].bool(), loss_count=loss_mask.sum().double(),
                  token_count=batch["attention_mask"].sum().double())
    return dict(student=student, teacher=teacher, task=task, examples=examples, batch=batch, signal=signal,
                targets=targets, masks=masks, student_logits=student_logits)


def reference_views(pair, gpt2_tokenizer, spm_tokenizer):
    """Per row: the teacher's full logits (B=1 forward with its lm_head) and the alignment."""
    student_bytes, teacher_bytes = TokenBytes.of(gpt2_tokenizer), TokenBytes.of(spm_tokenizer)
    for row, example in enumerate(pair["examples"]):
        view = teacher_view(example["input_ids"], student_bytes, spm_tokenizer, teacher_bytes)
        with torch.no_grad():
            logits = pair["teacher"](input_ids=torch.tensor([view.teacher_ids])).logits[0]
        yield row, example, view, logits


@pytest.mark.parametrize("loss", ["uld", "gold_hybrid"])
def test_logit_terms_match_a_row_by_row_computation(pair, gpt2_tokenizer, spm_tokenizer, loss):
    terms = build_terms([TermConfig(name=loss)], student_layers=2, teacher_layers=2)
    teacher_batch = pair["signal"].batch(pair["batch"], [0, 1, 2], Needs(True, False, False, True), pair["task"])
    value = compute_terms(terms, Features(logits=pair["student_logits"]), teacher_batch, pair["targets"], pair["masks"], None, 0.0)[loss]
    total, count = 0.0, 0
    token_map = pair["signal"].token_map
    for row, example, view, teacher_logits in reference_views(pair, gpt2_tokenizer, spm_tokenizer):
        count += sum(label != -100 for label in example["labels"][1:])
        for student_position, teacher_position in view.alignment.positions:
            if example["labels"][student_position + 1] == -100:
                continue
            extra = {"token_map": token_map} if loss == "gold_hybrid" else {}
            total += float(spec(loss).fn(pair["student_logits"][row, student_position], teacher_logits[teacher_position], **extra))
    assert float(value) == pytest.approx(total / count, rel=1e-9)
    assert total > 0


def test_span_term_matches_summed_log_probs(pair, gpt2_tokenizer, spm_tokenizer):
    terms = build_terms([TermConfig(name="span_logprob_mse")], student_layers=2, teacher_layers=2)
    teacher_batch = pair["signal"].batch(pair["batch"], [0, 1, 2], Needs(True, False, False, True), pair["task"])
    value = compute_terms(terms, Features(logits=pair["student_logits"]), teacher_batch, pair["targets"], pair["masks"], None, 0.0)
    total, count = 0.0, 0
    for row, example, view, teacher_logits in reference_views(pair, gpt2_tokenizer, spm_tokenizer):
        student_lp = torch.log_softmax(pair["student_logits"][row].float(), -1)
        teacher_lp = torch.log_softmax(teacher_logits.float(), -1)
        count += sum(label != -100 for label in example["labels"][1:])
        for student_range, teacher_range in view.alignment.spans:
            if any(example["labels"][p + 1] == -100 for p in student_range):
                continue  # a span with prompt text in it stays out
            s = sum(float(student_lp[p, example["input_ids"][p + 1]]) for p in student_range)
            t = sum(float(teacher_lp[p, view.teacher_ids[p + 1]]) for p in teacher_range)
            total += 0.5 * (s - t) ** 2
    assert float(value["span_logprob_mse"]) == pytest.approx(total / count, rel=1e-5)


def test_terms_that_need_one_vocabulary_are_refused(pair):
    def terms(name):
        return build_terms([TermConfig(name=name)], student_layers=2, teacher_layers=2)

    with pytest.raises(UserError, match="compares distributions over one vocabulary; with a teacher of another tokenizer use"):
        pair["signal"].check_terms(terms("forward_kl"))
    with pytest.raises(UserError, match="hidden states position by position"):
        pair["signal"].check_terms(terms("hidden_mse"))
    with pytest.raises(UserError, match="give the teacher its own tokenizer"):
        LiveTeacher(pair["teacher"]).check_terms(terms("span_logprob_mse"))
    pair["signal"].check_terms(terms("uld") + terms("span_logprob_mse") + terms("ce"))


def cross_config(output_dir, gpt2_dir, spm_dir, **sections) -> dict:
    config = tiny_run_config(output_dir, gpt2_dir, **sections)
    config["teacher"] = {"config": {"model_type": "llama", "vocab_size": 32000, "hidden_size": 32, "intermediate_size": 64,
                                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                    "max_position_embeddings": 256, "tie_word_embeddings": False},
                         "tokenizer": str(spm_dir)}
    config["student"] = {"config": {"model_type": "llama", "vocab_size": 50257, "hidden_size": 16, "intermediate_size": 32,
                                    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
                                    "max_position_embeddings": 256, "tie_word_embeddings": False}}
    config["objective"] = sections.get("objective", [{"name": "ce", "weight": 1.0}, {"name": "uld", "weight": 0.5, "top_k": 16},
                                                     {"name": "gold_hybrid", "weight": 0.5, "top_k": 16},
                                                     {"name": "span_logprob_mse", "weight": 0.05}])
    return config


@pytest.mark.parametrize("change, message", [
    (lambda c: c["teacher"].update(cache="x", config=None), "works with a live teacher only"),
    (lambda c: c.update(teacher=[c["teacher"], c["teacher"]]), "several teachers with teacher.tokenizer are not supported yet"),
    (lambda c: c.update(student={"from_teacher": {"layers": [0]}}), "student.from_teacher copies the teacher's layers"),
])
def test_config_errors_are_one_line(tmp_path, gpt2_tokenizer_dir, spm_tokenizer_dir, change, message):
    config = cross_config(tmp_path, gpt2_tokenizer_dir, spm_tokenizer_dir)
    change(config)
    with pytest.raises((UserError, ValueError), match=message):
        RunConfig.model_validate(config)


def _weights(run_dir):
    return load_file(str(run_dir / "student" / "model.safetensors"))


def test_resumed_cross_tokenizer_run_equals_an_uninterrupted_one(tmp_path, gpt2_tokenizer_dir, spm_tokenizer_dir):
    train = {"max_steps": 4, "batch_size": 2, "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "log_every": 1,
             "save_every": 2, "progress": False}
    straight = distill(cross_config(tmp_path / "straight", gpt2_tokenizer_dir, spm_tokenizer_dir, train=train))
    assert distill(cross_config(tmp_path / "resumed", gpt2_tokenizer_dir, spm_tokenizer_dir, train=train), stop_after=2).stopped_early
    resumed = distill(cross_config(tmp_path / "resumed", gpt2_tokenizer_dir, spm_tokenizer_dir, train=train), resume=True)
    assert resumed.steps == straight.steps == 4
    expected, actual = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6)
    log = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert all(math.isfinite(entry["loss"]) and entry["loss"] > 0 for entry in log)


def test_cli_trains_the_shipped_cross_tokenizer_config(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    code = main(["train", "--config", "configs/tiny-cross-tokenizer.yaml", f"output_dir={tmp_path / 'run'}",
                 "train.max_steps=2", "train.eval_every=2", "train.save_every=2", "train.progress=false"])
    assert code == 0
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["check", "--config", "configs/tiny-cross-tokenizer.yaml", f"output_dir={tmp_path / 'check'}"]) == 0
    report = " ".join(capsys.readouterr().out.split())
    assert "loss positions aligned with a teacher position" in report and "exactly mapped" in report


def test_chat_lora_and_on_policy_with_a_cross_tokenizer_teacher(tmp_path, gpt2_tokenizer, gpt2_tokenizer_dir, spm_tokenizer_dir):
    """Chat data (loss on assistant tokens only), a LoRA student and student rollouts re-tokenised for the teacher."""
    from tests.test_data_chat import SIMPLE_TEMPLATE

    chat_tokenizer = copy.deepcopy(gpt2_tokenizer)
    chat_tokenizer.chat_template = SIMPLE_TEMPLATE
    chat_tokenizer.save_pretrained(tmp_path / "chat-tokenizer")
    records = [{"messages": [{"role": "user", "content": f"Say {word}."}, {"role": "assistant", "content": f"{word} 😀 ok"}]}
               for word in ["hello", "日本", "bye", "café"]]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    config = cross_config(tmp_path / "run", tmp_path / "chat-tokenizer", spm_tokenizer_dir,
                          train={"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "log_every": 1, "progress": False})
    config["data"] = {"train": str(tmp_path / "chat.jsonl"), "format": "chat", "max_length": 48}
    config["student"]["lora"] = {"r": 2}
    config["on_policy"] = {"lmbda": 0.5, "sampling": {"max_new_tokens": 6}}
    result = distill(config)
    assert result.steps == 2
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert all(math.isfinite(entry["loss"]) for entry in log)


def test_a_cross_tokenizer_teacher_cache_is_a_one_line_error(tmp_path, gpt2_tokenizer_dir, spm_tokenizer_dir):
    from lmdistill.cache import build_teacher_cache

    config = RunConfig.model_validate(cross_config(tmp_path, gpt2_tokenizer_dir, spm_tokenizer_dir))
    with pytest.raises(UserError, match="cannot be cached yet; distil from it live"):
        build_teacher_cache(config, tmp_path / "cache", 8)
