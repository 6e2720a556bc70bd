"""`lmdistill eval` and the report on a real tiny run: values checked against independent computations."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from conftest import require_shared_data, tiny_llama_config, tiny_run_config
from lmdistill import distill
from lmdistill.cli import main
from lmdistill.eval.compare import evaluate_model_dirs
from lmdistill.report import build_report


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, gpt2_tokenizer_dir):
    """Two tiny random Llamas saved as HF dirs with the real GPT-2 tokenizer, and a small held-out text file."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    folders = {}
    for seed, name in ((0, "teacher"), (1, "student")):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config(vocab_size=len(tokenizer), layers=2 if name == "student" else 3))
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        folders[name] = root / name
    data = root / "heldout.jsonl"
    texts = ["Once upon a time there was a small red fox.", "The sun was warm and the birds sang all day long."]
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return folders, data, texts, tokenizer


def test_perplexity_and_agreement_match_independent_computation(saved_models):
    folders, data, texts, tokenizer = saved_models
    results = evaluate_model_dirs({"student": folders["student"]}, str(data), teacher=folders["teacher"])
    student = AutoModelForCausalLM.from_pretrained(folders["student"]).eval()
    teacher = AutoModelForCausalLM.from_pretrained(folders["teacher"]).eval()
    nll, count, matches, kl = 0.0, 0, 0, 0.0
    with torch.no_grad():
        for text in texts:  # one unpadded sequence at a time, text + EOS as the data pipeline builds it
            ids = torch.tensor([tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]])
            s_logits, t_logits = student(ids).logits[0, :-1].double(), teacher(ids).logits[0, :-1].double()
            nll += F.cross_entropy(s_logits, ids[0, 1:], reduction="sum").item()
            count += ids.shape[1] - 1
            matches += (s_logits.argmax(-1) == t_logits.argmax(-1)).sum().item()
            kl += (t_logits.softmax(-1) * (t_logits.log_softmax(-1) - s_logits.log_softmax(-1))).sum().item()
    assert results["student"]["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert results["student"]["top1_agreement"] == pytest.approx(matches / count)
    assert results["student"]["mean_token_kl"] == pytest.approx(kl / count, rel=1e-4)
    assert results["teacher"]["parameters"] == sum(p.numel() for p in teacher.parameters())
    assert results["student"]["layers"] == 2 and results["teacher"]["layers"] == 3
    assert "top1_agreement" not in results["teacher"]


def test_a_model_agrees_fully_with_itself(saved_models):
    folders, data, _, _ = saved_models
    results = evaluate_model_dirs({"copy": folders["teacher"]}, str(data), teacher=folders["teacher"])
    assert results["copy"]["top1_agreement"] == 1.0
    assert results["copy"]["mean_token_kl"] == pytest.approx(0.0, abs=1e-6)
    assert results["copy"]["perplexity"] == pytest.approx(results["teacher"]["perplexity"])


def test_eval_command_writes_the_report_format(saved_models, tmp_path, capsys):
    folders, data, _, _ = saved_models
    out = tmp_path / "evaluation.json"
    assert main(["eval", "--model", f"student={folders['student']}", "--teacher", str(folders["teacher"]),
                 "--data", str(data), "--output", str(out)]) == 0
    written = json.loads(out.read_text())["models"]
    assert set(written) == {"teacher", "student"} and written["student"]["perplexity"] > 1
    assert "student" in capsys.readouterr().out
    for row in written.values():  # both held-out prompts sampled by default
        assert row["teacher_nll_of_samples"] > 0 and 0 < row["distinct_2"] <= 1 and 0 <= row["loop_rate"] <= 1


def test_sample_metrics_of_a_copy_of_the_teacher_equal_the_teachers(saved_models):
    """Same weights, same seeds: the copy's samples are the teacher's, scored by the teacher."""
    from lmdistill.config import SamplingConfig
    from lmdistill.eval.compare import compare_model_dirs
    from lmdistill.eval.sample_quality import sample_quality

    folders, data, texts, tokenizer = saved_models
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=8)
    models = compare_model_dirs({"copy": folders["teacher"], "student": folders["student"]}, str(data),
                                teacher=folders["teacher"], sample_prompts=2, sampling=sampling, speed_rounds=1).models
    keys = ("teacher_nll_of_samples", "distinct_2", "loop_rate", "sample_tokens")
    assert {k: models["copy"][k] for k in keys} == {k: models["teacher"][k] for k in keys}
    # the student's row: its samples from the held-out prompts (text data: the first half of each text, at most 16 tokens)
    prompts = []
    for text in texts:
        ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        prompts.append(ids[:min(16, len(ids) // 2)])
    student = AutoModelForCausalLM.from_pretrained(folders["student"]).eval()
    teacher = AutoModelForCausalLM.from_pretrained(folders["teacher"]).eval()
    by_hand = sample_quality(student, teacher, prompts, sampling=sampling, seed=0, pad_id=tokenizer.pad_token_id or 0,
                             eos_token_id={tokenizer.eos_token_id}, batch_size=4, device="cpu")
    assert {k: models["student"][k] for k in keys} == pytest.approx(by_hand)


def test_report_from_a_real_tiny_run(tmp_path, gpt2_tokenizer_dir):
    config = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir)
    config["data"]["eval_fraction"] = 0.2
    config["train"].update(max_steps=4, eval_every=2)
    distill(config)
    evaluation = {"models": {"teacher": {"parameters": 2_000_000, "perplexity": 50.0},
                             "student": {"parameters": 1_000_000, "perplexity": 60.5, "top1_agreement": 0.25}}}
    (tmp_path / "run" / "evaluation.json").write_text(json.dumps(evaluation))
    markdown, html = build_report(tmp_path / "run")
    text = markdown.read_text()
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    last_eval = [row for row in logged if row["split"] == "eval"][-1]
    from lmdistill.report.build import format_value

    # The last evaluation's row, formatted as the report formats numbers, is in the table.
    assert f"| {last_eval['step']} | {format_value(last_eval['eval/loss'])} | {format_value(last_eval['eval/perplexity'])} |" in text
    assert "60.5" in text and "forward_kl" in text
    assert (markdown.parent / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "data:image/png;base64," in html.read_text()
