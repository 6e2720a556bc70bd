"""The exported student's model card: huggingface_hub parses it back with the run's metadata and evaluated metrics."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from conftest import tiny_run_config
from lmdistill import __version__, distill
from lmdistill.report.model_card import write_model_card

CONFIG = {
    "output_dir": "unused",
    "teacher": {"path": "HuggingFaceTB/SmolLM2-360M"},
    "student": {"from_teacher": {"layers": [0, 3]}},
    "data": {"train": "roneneldan/TinyStories", "format": "text", "max_length": 64},
    "objective": [{"name": "forward_kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}],
    "train": {"max_steps": 3},
}
MODELS = {
    "teacher": {"parameters": 1000, "perplexity": 12.5},
    "student": {"parameters": 250, "latency_ms_per_example": 2.0, "perplexity": 15.25, "top1_agreement": 0.8125,
                "lm_eval/sst2_mc/acc": 0.75},
    "baseline": {"parameters": 250, "perplexity": 19.75},
}


def _synthetic_run(run_dir):
    (run_dir / "student").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (run_dir / "run_info.json").write_text(json.dumps({"command": "lmdistill train --config run.yaml",
                                                        "lmdistill_version": "9.9.9", "pipeline_tag": "text-generation"}))
    lines = [{"step": s, "split": "train", "loss": 1.0 / s, "tokens": 512 * s} for s in (1, 2, 3)]
    lines.append({"step": 3, "split": "eval", "eval/perplexity": 17.5})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run_dir / "evaluation.json").write_text(json.dumps({"models": MODELS}))
    (run_dir / "student" / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2,
                                                                  "hidden_size": 32}))
    # 3·4 + 5 = 17 parameters
    save_file({"a.weight": torch.zeros(3, 4), "b.bias": torch.zeros(5)}, str(run_dir / "student" / "model.safetensors"))
    return run_dir


def test_card_metadata_and_body_parse_back_with_huggingface_hub(tmp_path):
    run_dir = _synthetic_run(tmp_path / "run")
    path = write_model_card(run_dir)
    assert path == run_dir / "student" / "README.md"
    card = ModelCard.load(path)
    data = card.data
    assert data.base_model == ["HuggingFaceTB/SmolLM2-360M"]
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert {"distillation", "lmdistill"} <= set(data.tags)
    assert data.datasets == ["roneneldan/TinyStories"]
    scores = {(r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results if r.dataset_split != "held-out"}
    # Scores only: size and speed are not model-index metrics.
    assert scores == {("roneneldan/TinyStories", "perplexity"): 15.25, ("roneneldan/TinyStories", "top1_agreement"): 0.8125,
                      ("sst2_mc", "acc"): 0.75}
    held_out = [r for r in data.eval_results if r.dataset_split == "held-out"]
    assert [(r.metric_type, r.metric_value) for r in held_out] == [("perplexity", 17.5)]
    body = card.text
    assert "HuggingFaceTB/SmolLM2-360M" in body
    assert "depth-pruned from the teacher (layers=[0, 3])" in body
    assert "0.5 × forward_kl (temperature=2.0) + 0.5 × ce" in body
    assert "3 optimizer steps, 1,536 tokens" in body
    assert "| parameters | 17 |" in body and "| num_hidden_layers | 2 |" in body
    # The comparison table has the teacher, student and baseline columns with their perplexities.
    assert "| metric | teacher | student | baseline |" in body
    assert "| Perplexity | 12.5000 | 15.2500 | 19.7500 |" in body
    assert "lmdistill train --config run.yaml" in body and "lmdistill 9.9.9" in body


def test_no_card_before_the_first_metrics_line(tmp_path):
    run_dir = _synthetic_run(tmp_path / "run")
    (run_dir / "metrics.jsonl").unlink()  # stopped before train.log_every steps: nothing logged yet
    assert write_model_card(run_dir) is None and not (run_dir / "student" / "README.md").exists()


def test_local_files_are_named_in_the_body_but_not_claimed_as_hub_datasets(tmp_path):
    run_dir = _synthetic_run(tmp_path / "run")
    local = tmp_path / "stories.txt"
    local.write_text("once\n")
    config = {**CONFIG, "teacher": {"path": str(tmp_path)}, "data": {**CONFIG["data"], "train": str(local)}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    card = ModelCard.load(write_model_card(run_dir))
    assert card.data.base_model is None and card.data.datasets is None
    assert str(local) in card.text
    # A data file's name is never claimed as a Hub dataset, even where the file is not found from here.
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "data": {**CONFIG["data"], "train": "elsewhere.jsonl"}}))
    assert ModelCard.load(write_model_card(run_dir)).data.datasets is None
    assert {r.dataset_type for r in card.data.eval_results if r.dataset_split is None and r.dataset_type != "sst2_mc"} == {"stories.txt"}


def test_a_training_run_exports_a_card_with_its_steps_tokens_and_scores(tmp_path, gpt2_tokenizer_dir):
    from lmdistill.config import parse_config
    from lmdistill.train.run import build_run

    raw = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir, train={"max_steps": 3, "batch_size": 4, "log_every": 1,
                                                                       "eval_every": 3, "progress": False},
                          data={**tiny_run_config(tmp_path, gpt2_tokenizer_dir)["data"], "eval_fraction": 0.1})
    result = distill(raw)
    card = ModelCard.load(result.student_dir / "README.md")
    assert card.data.pipeline_tag == "text-generation" and card.data.library_name == "transformers"
    last_eval = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert last_eval["split"] == "eval"
    logged = {key.removeprefix("eval/"): value for key, value in last_eval.items() if key.startswith("eval/")}
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == pytest.approx(logged)
    # Tokens trained, counted independently from the run's own batches of examples.
    run = build_run(parse_config({**raw, "output_dir": str(tmp_path / "count")}))
    order = run.batches.epoch_batches(0)
    tokens = sum(len(run.train_examples[i]["input_ids"]) for batch in order[:3] for i in batch)
    assert f"3 optimizer steps, {tokens:,} tokens" in card.text
    assert f"lmdistill {__version__}" in card.text
