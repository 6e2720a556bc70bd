"""Presets: each expands to its documented terms and stages, and runs 2 steps on tiny random BERTs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from lmdistill.cli import main
from lmdistill.errors import UserError
from lmdistill.presets import PRESETS, describe_presets, expand_preset_config, preset_stages, run_stages
from test_classification_helpers import make_tokenizer_dir, run_config, tiny_bert  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

E = [[-1, -1]]
# (stage name, share, [(loss name, weight, layers, extra params)]) — written out from the papers, not from the code.
DOCUMENTED = {
    "distilbert": [("distil", 1.0, [("soft_ce", 5.0, "uniform", {"temperature": 2.0}), ("ce", 2.0, "uniform", {}),
                                    ("hidden_cosine", 1.0, "last", {})])],
    "tinybert": [("intermediate", 0.5, [("hidden_mse", 1.0, E, {}), ("hidden_mse", 1.0, "uniform", {}), ("attention_mse", 1.0, "uniform", {})]),
                 ("prediction", 0.5, [("soft_ce", 1.0, "uniform", {"temperature": 1.0})])],
    "minilm": [("attention_transfer", 0.5, [("minilm", 1.0, "last", {})]), ("finetune", 0.5, [("ce", 1.0, "uniform", {})])],
    "minilm_v2": [("relation_transfer", 0.5, [("minilm_v2", 1.0, "last", {"num_relation_heads": 4})]),
                  ("finetune", 0.5, [("ce", 1.0, "uniform", {})])],
    "textbrewer_general": [("distil", 1.0, [("soft_ce", 1.0, "uniform", {"temperature": 8.0, "scale_by_temperature_squared": False}),
                                            ("hidden_mse", 1.0, E, {}), ("hidden_mse", 1.0, "uniform", {}),
                                            ("hidden_mmd", 1.0, E, {}), ("hidden_mmd", 1.0, "uniform", {})])],
    "semantic": [("distil", 1.0, [("reverse_kl", 0.5, "uniform", {"temperature": 1.0}), ("hidden_mse", 0.5, "uniform", {})])],
    "attention": [("distil", 1.0, [("ce", 1.0, "uniform", {}), ("attention_kl", 1.0, "uniform", {"temperature": 3.0})])],
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tokenizer_dir(tmp_path_factory.mktemp("vocab"))


def _as_documented(configs):
    stages = []
    for config in configs:
        terms = [(t.name, float(t.weight), [list(p) for p in t.layers] if isinstance(t.layers, list) else t.layers, t.params)
                 for t in config.objective]
        stages.append((Path(config.output_dir).name, config.train.max_steps, terms))
    return stages


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_preset_expands_to_the_documented_stages_and_terms(tmp_path, tokenizer_dir, name):
    raw = run_config(tmp_path, tokenizer_dir, train={"max_steps": 10, "batch_size": 8, "progress": False})
    del raw["objective"]
    configs = expand_preset_config({**raw, "preset": name})
    documented = DOCUMENTED[name]
    multi = len(documented) > 1
    expected = [(f"{i + 1}-{stage}" if multi else "run", round(10 * share), [(n, w, l, p) for n, w, l, p in terms])
                for i, (stage, share, terms) in enumerate(documented)]
    assert _as_documented(configs) == expected
    for previous, config in zip(configs, configs[1:]):
        assert config.student.path == str(Path(previous.output_dir) / "student")


def test_every_preset_is_tested_and_listed_on_one_line():
    assert set(PRESETS) == set(DOCUMENTED)
    lines = describe_presets()
    assert len(lines) == len(PRESETS) and all("\n" not in line for line in lines)
    assert [line.split()[0] for line in lines] == list(PRESETS)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_preset_runs_two_steps_and_the_last_student_reloads(tmp_path, tokenizer_dir, name):
    raw = run_config(tmp_path, tokenizer_dir)
    del raw["objective"]
    results = run_stages(expand_preset_config({**raw, "preset": name}))
    assert sum(result.steps for result in results) == 2
    for result in results:
        lines = [json.loads(l) for l in (Path(result.output_dir) / "metrics.jsonl").read_text().splitlines()]
        assert all(line["loss"] == line["loss"] for line in lines)  # finite, not NaN
    model = AutoModelForSequenceClassification.from_pretrained(results[-1].student_dir)
    assert model.config.num_hidden_layers == 2


def test_options_and_stage_overrides(tmp_path, tokenizer_dir):
    raw = run_config(tmp_path, tokenizer_dir, train={"max_steps": 10, "batch_size": 8, "progress": False})
    del raw["objective"]
    configs = expand_preset_config({**raw, "preset": {"name": "tinybert", "temperature": 4.0, "intermediate_share": 0.8},
                                    "stage_overrides": {"prediction": {"train.learning_rate": 1e-5}}})
    assert [c.train.max_steps for c in configs] == [8, 2]
    assert configs[1].objective[0].params == {"temperature": 4.0} and configs[1].train.learning_rate == 1e-5
    assert configs[0].train.learning_rate == raw["train"].get("learning_rate", 5e-4)
    stages = preset_stages("semantic", alpha=0.25)
    assert [(t["name"], t["weight"]) for t in stages[0].objective] == [("reverse_kl", 0.25), ("hidden_mse", 0.75)]
    brewer = preset_stages("textbrewer_general", hard_label_weight=0.5)[0].objective
    assert [(t["name"], t["weight"]) for t in brewer][-2:] == [("hidden_mmd", 1.0), ("ce", 0.5)]


def test_textbrewer_mse_kd_loss_is_textbrewers_logit_mse():
    """kd_loss_type=mse: TextBrewer's kd_mse_loss, F.mse_loss(z_s / T, z_t / T) with no T², times kd_loss_weight."""
    from lmdistill.losses.registry import get

    logit_term = preset_stages("textbrewer_general", kd_loss_type="mse", kd_loss_weight=3.0, temperature=2.0)[0].objective[0]
    assert (logit_term["name"], logit_term["weight"]) == ("logit_mse", 3.0)
    options = {k: v for k, v in logit_term.items() if k not in ("name", "weight")}
    student, teacher = torch.randn(5, 2), torch.randn(5, 2) * 4
    ours = logit_term["weight"] * get("logit_mse")(student, teacher, **options).mean()
    assert torch.allclose(ours, 3.0 * torch.nn.functional.mse_loss(student / 2.0, teacher / 2.0))
    no_logits = preset_stages("textbrewer_general", kd_loss_weight=0)[0].objective
    assert [t["name"] for t in no_logits] == ["hidden_mse", "hidden_mse", "hidden_mmd", "hidden_mmd"]


def test_preset_mistakes_are_user_errors(tmp_path, tokenizer_dir):
    raw = run_config(tmp_path, tokenizer_dir)
    with pytest.raises(UserError, match="either `preset` or `objective`"):
        expand_preset_config({**raw, "preset": "distilbert"})
    del raw["objective"]
    with pytest.raises(UserError, match="unknown preset 'bert'"):
        expand_preset_config({**raw, "preset": "bert"})
    with pytest.raises(UserError, match="has no option 'alpha'"):
        expand_preset_config({**raw, "preset": {"name": "distilbert", "alpha": 0.1}})
    with pytest.raises(UserError, match="alpha=1.5 is outside"):
        preset_stages("semantic", alpha=1.5)
    with pytest.raises(UserError, match="hard_label_weight=-1 is negative"):
        preset_stages("textbrewer_general", hard_label_weight=-1)
    with pytest.raises(UserError, match="kd_loss_type='kl' is not one of ce, mse"):
        preset_stages("textbrewer_general", kd_loss_type="kl")
    with pytest.raises(UserError, match="stage_overrides names"):
        expand_preset_config({**raw, "preset": "distilbert", "stage_overrides": {"nope": {}}})


def test_cli_lists_presets_and_shows_one(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == list(PRESETS)
    assert main(["presets", "--show", "tinybert"]) == 0
    assert "attention_mse" in capsys.readouterr().out
    assert main(["presets", "--show", "nope"]) == 2


def test_cli_train_runs_every_stage_and_the_next_starts_from_the_last_student(tmp_path, tokenizer_dir, capsys):
    """`lmdistill train` on a preset config: stage 2 (plain CE) gets half the steps and its step-1 loss equals the CE
    of stage 1's saved student on stage 2's first batch, computed here from the saved weights."""
    import yaml

    from lmdistill.config import parse_config
    from lmdistill.data.collate import batches_for_epoch
    from lmdistill.models.loading import load_tokenizer
    from lmdistill.tasks import get_task

    no_dropout = {**tiny_bert(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    raw = run_config(tmp_path, tokenizer_dir, teacher={"config": no_dropout})
    del raw["objective"]
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump({**raw, "preset": "minilm"}))
    assert main(["train", "--config", str(path), "train.max_steps=4"]) == 0
    assert "2-finetune/student" in capsys.readouterr().out
    stage_dirs = [tmp_path / "run" / "1-attention_transfer", tmp_path / "run" / "2-finetune"]
    logged = [[json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()] for folder in stage_dirs]
    assert [[line["step"] for line in lines] for lines in logged] == [[1, 2], [1, 2]]
    assert set(logged[1][0]) >= {"loss/ce"} and "loss/minilm" in logged[0][0]
    config = parse_config({**raw, "objective": [{"name": "ce"}]})
    task = get_task("sequence_classification")
    examples, _ = task.load_datasets(config.data, load_tokenizer(str(tokenizer_dir)), 0)
    batch = task.collate([examples[j] for j in batches_for_epoch(len(examples), 8, 0, 0)[0]], 0)
    stage_1 = AutoModelForSequenceClassification.from_pretrained(stage_dirs[0] / "student")
    with torch.no_grad():
        logits = stage_1(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits.double()
    expected = float(torch.nn.functional.cross_entropy(logits, batch["labels"]))
    assert logged[1][0]["loss"] == pytest.approx(expected, rel=1e-5)


def test_the_old_train_preset_command_says_what_replaced_it(tmp_path, capsys):
    assert main(["train-preset", "--config", "x.yaml"]) == 2
    assert capsys.readouterr().err.strip() == ("error: `lmdistill train-preset` was replaced by `lmdistill train`, which "
                                               "runs every stage of a preset config; run: lmdistill train --config x.yaml")
