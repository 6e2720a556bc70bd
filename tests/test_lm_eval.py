"""`lmdistill eval --lm-eval`: lm-evaluation-harness on the shipped local SST-2 task, scores checked by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from conftest import require_shared_data
from lmdistill.cli import main
from lmdistill.eval.harness import harness_scores, local_task_names

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "examples" / "lm_eval"
LIMIT = 12


def _tiny_model(folder: Path, tokenizer_dir: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(folder)
    return folder


def _accuracy_by_hand(model_dir: Path, rows: list[dict]) -> float:
    """Multiple-choice accuracy: argmax over choices of Σ log p(choice tokens | prompt), against the label."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    correct = 0
    for row in rows:
        context = f"Review: {row['sentence']}\nSentiment:"
        context_ids = tokenizer(context)["input_ids"]
        scores = []
        for choice in (" negative", " positive"):
            ids = tokenizer(context + choice)["input_ids"]
            with torch.no_grad():
                log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
            scores.append(sum(log_probs[t - 1, ids[t]].item() for t in range(len(context_ids), len(ids))))
        correct += int(max(range(2), key=lambda k: scores[k]) == int(row["label"]))
    return correct / len(rows)


def test_shipped_task_runs_on_teacher_and_student_and_lands_in_evaluation_and_card(tmp_path, gpt2_tokenizer_dir, monkeypatch):
    pytest.importorskip("lm_eval")
    dev = require_shared_data("sst2", "dev.tsv")
    monkeypatch.chdir(REPO)  # the shipped task reads ../shared/data relative to the repository root
    run_dir = tmp_path / "run"
    student = _tiny_model(run_dir / "student", gpt2_tokenizer_dir, seed=1)
    teacher = _tiny_model(tmp_path / "teacher", gpt2_tokenizer_dir, seed=2)
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "split": "train", "loss": 1.0}) + "\n")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"teacher": {"path": str(teacher)}, "objective": [{"name": "ce"}]}))
    output = run_dir / "evaluation.json"
    output.write_text(json.dumps({"models": {"student": {"perplexity": 99.5}}}))  # an earlier `eval --data`: kept

    code = main(["eval", "--model", f"student={student}", "--teacher", str(teacher), "--lm-eval", "sst2_mc_local",
                 "--lm-eval-include", str(TASKS), "--lm-eval-limit", str(LIMIT), "--output", str(output)])
    assert code == 0
    models = json.loads(output.read_text())["models"]
    with open(dev, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:LIMIT]
    assert models["student"]["lm_eval/sst2_mc_local/acc"] == pytest.approx(_accuracy_by_hand(student, rows))
    assert models["teacher"]["lm_eval/sst2_mc_local/acc"] == pytest.approx(_accuracy_by_hand(teacher, rows))
    assert models["student"]["perplexity"] == 99.5
    card = ModelCard.load(run_dir / "student" / "README.md")
    by_metric = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert by_metric[("sst2_mc_local", "acc")] == models["student"]["lm_eval/sst2_mc_local/acc"]


def test_harness_results_become_named_scores_without_standard_errors():
    results = {"results": {"sst2_mc_local": {"alias": "sst2_mc_local", "acc,none": 0.75, "acc_stderr,none": 0.1,
                                             "sample_len": 12},
                           "gsm8k": {"exact_match,strict-match": 0.25, "exact_match,flexible-extract": 0.5}}}
    assert harness_scores(results) == {"lm_eval/sst2_mc_local/acc": 0.75, "lm_eval/gsm8k/exact_match.strict-match": 0.25,
                                       "lm_eval/gsm8k/exact_match.flexible-extract": 0.5}
    assert local_task_names(TASKS) == {"sst2_mc_local"}


def test_eval_needs_data_or_harness_tasks(capsys):
    assert main(["eval", "--model", "somewhere"]) == 2
    assert "give --data" in capsys.readouterr().err
