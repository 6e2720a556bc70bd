"""Depth pruning by importance: block influence and loss-increase scores against independent computations, the
choice of layers, and `from_teacher: {by: importance}` through the engine (a live teacher and a teacher cache)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertModel, LlamaForCausalLM

from conftest import tiny_llama_config, tiny_run_config
from lmdistill import distill
from lmdistill.cache import build_teacher_cache, run_tokenizer_source
from lmdistill.config import parse_config
from lmdistill.errors import UserError
from lmdistill.models.importance import block_influence, loss_increase, most_important
from lmdistill.models.pruning import student_from_teacher
from lmdistill.tasks import get_task
from lmdistill.tasks.calibration import calibration_batches, task_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _batches(vocab: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for lengths in ([7, 5, 3], [6, 6, 2]):
        ids = torch.randint(0, vocab, (3, max(lengths)), generator=generator)
        mask = torch.zeros_like(ids)
        for row, length in enumerate(lengths):
            mask[row, :length] = 1
        labels = ids.masked_fill(mask == 0, -100)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def _influence_from_hidden_states(hidden_states, mask, blocks):
    """1 − cos(hidden_states[i], hidden_states[i+1]) summed over real tokens, per block i."""
    sums = []
    for i in blocks:
        cosine = torch.nn.functional.cosine_similarity(hidden_states[i].double(), hidden_states[i + 1].double(), dim=-1)
        sums.append(float((1 - cosine)[mask.bool()].sum()))
    return sums


def test_block_influence_of_an_encoder_equals_one_minus_cosine_of_its_hidden_states():
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                 intermediate_size=32)).eval()
    batches = _batches(50)
    expected = torch.zeros(3, dtype=torch.float64)
    tokens = 0
    for batch in batches:
        with torch.no_grad():
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states
        expected += torch.tensor(_influence_from_hidden_states(hidden, batch["attention_mask"], range(3)), dtype=torch.float64)
        tokens += int(batch["attention_mask"].sum())
    assert block_influence(model, batches) == pytest.approx((expected / tokens).tolist(), rel=1e-9)


def test_block_influence_of_a_causal_lm_matches_its_hidden_states_before_the_final_norm():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=61, layers=4)).eval()
    batches = _batches(61)
    with torch.no_grad():
        hidden = [model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True).hidden_states for b in batches]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    # hidden_states[4] is after the final norm, so only blocks 0..2 are checked this way.
    expected = [sum(values) / tokens for values in zip(*(_influence_from_hidden_states(h, b["attention_mask"], range(3))
                                                         for h, b in zip(hidden, batches)))]
    assert block_influence(model, batches)[:3] == pytest.approx(expected, rel=1e-9)


def test_loss_increase_equals_the_loss_of_the_model_without_that_layer_minus_the_full_loss():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=61, layers=4)).eval()
    batches = _batches(61)

    def mean_ce(m):
        total = 0.0
        for batch in batches:
            with torch.no_grad():
                logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            targets = batch["labels"][:, 1:]
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, 61), targets.reshape(-1), ignore_index=-100))
        return total / len(batches)

    full = mean_ce(model)
    expected = [mean_ce(student_from_teacher(model, [j for j in range(4) if j != i]).eval()) - full for i in range(4)]
    scores = loss_increase(model, batches, task_loss(get_task("causal_lm")))
    assert scores == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert len(model.model.layers) == 4  # the model is left whole


@pytest.mark.parametrize("scores,count,expected", [
    ([0.9, 0.1, 0.5, 0.4, 0.2], 3, [0, 2, 4]),  # ends kept, then the best of the middle
    ([0.0, 0.3, 0.3, 0.1, 0.0], 4, [0, 1, 2, 4]),  # a tie goes to the earlier layer
    ([0.1, 0.9, 0.2], 1, [1]),
    ([0.1, 0.9, 0.2], 3, [0, 1, 2]),
])
def test_most_important_keeps_the_ends_and_the_highest_scores(scores, count, expected):
    assert most_important(scores, count) == expected


def test_importance_needs_a_count():
    with pytest.raises(UserError, match="by: importance chooses `count` layers"):
        parse_config({**tiny_run_config("runs/x", "tok"), "student": {"from_teacher": {"layers": [0, 1], "by": "importance"}}})


def _expected_importance(raw, tokenizer_dir):
    """The calibration scores computed outside the engine: the same examples, batches and teacher weights."""
    from lmdistill.models.build import load_teacher
    from lmdistill.models.loading import load_tokenizer

    config = parse_config(raw)
    task = get_task("causal_lm")
    tokenizer = load_tokenizer(str(tokenizer_dir))
    examples, _ = task.load_datasets(config.data, tokenizer, config.seed)
    teacher = load_teacher(config.teachers[0], model_class=task.model_class, seed=config.seed)
    batches = calibration_batches(task, examples, tokenizer.pad_token_id, count=8, batch_size=config.train.batch_size, seed=config.seed)
    return block_influence(teacher, batches), teacher


def test_a_run_keeps_the_teachers_most_important_layers_and_records_the_scores(tmp_path, gpt2_tokenizer_dir):
    raw = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir,
                          student={"from_teacher": {"count": 3, "by": "importance", "calibration_examples": 8}})
    raw["teacher"]["config"]["num_hidden_layers"] = 6
    scores, teacher = _expected_importance(raw, gpt2_tokenizer_dir)
    result = distill(raw)
    record = json.loads((tmp_path / "run" / "pruning.json").read_text())
    assert record["layer_scores"] == pytest.approx(scores, rel=1e-9)
    kept = most_important(scores, 3)
    assert record["kept_layers"] == kept and kept[0] == 0 and kept[-1] == 5
    # The student started as exactly those teacher layers: its untrained copy equals the engine's choice.
    expected_student = student_from_teacher(teacher, kept)
    trained = LlamaForCausalLM.from_pretrained(result.student_dir)
    assert trained.config.num_hidden_layers == 3
    assert expected_student.model.layers[1].mlp.up_proj.weight.shape == trained.model.layers[1].mlp.up_proj.weight.shape


def test_a_student_pruned_by_importance_from_a_teacher_cache_loads_the_teacher_the_cache_recorded(tmp_path, gpt2_tokenizer_dir):
    raw = tiny_run_config(tmp_path / "live", gpt2_tokenizer_dir,
                          student={"from_teacher": {"count": 2, "by": "importance", "calibration_examples": 8}})
    teacher_dir = tmp_path / "teacher"
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(vocab_size=50257, layers=4)).save_pretrained(teacher_dir)
    raw["teacher"] = {"path": str(teacher_dir)}
    cache = build_teacher_cache(parse_config(raw), tmp_path / "cache", 8)
    scores, teacher = _expected_importance(raw, gpt2_tokenizer_dir)
    # No `tokenizer:` either: nothing but the cache names one, so the run reads the one the cache was built with.
    cached_raw = {**{k: v for k, v in raw.items() if k != "tokenizer"}, "output_dir": str(tmp_path / "cached"),
                  "teacher": {"cache": str(cache)}}
    assert run_tokenizer_source(parse_config(cached_raw)) == raw["tokenizer"]
    cached = distill(cached_raw)
    record = json.loads((tmp_path / "cached" / "pruning.json").read_text())
    assert record["layer_scores"] == pytest.approx(scores, rel=1e-9) and record["kept_layers"] == most_important(scores, 2)
    assert cached.steps == raw["train"]["max_steps"]


def test_a_cache_built_from_a_teacher_config_cannot_give_a_pruned_student(tmp_path, gpt2_tokenizer_dir):
    raw = tiny_run_config(tmp_path / "live", gpt2_tokenizer_dir, student={"from_teacher": {"count": 2}})
    cache = build_teacher_cache(parse_config(raw), tmp_path / "cache", 8)
    with pytest.raises(UserError, match="built from a teacher config"):
        distill({**raw, "output_dir": str(tmp_path / "cached"), "teacher": {"cache": str(cache)}})


def test_a_run_with_a_width_pruned_student_trains_and_records_the_new_sizes(tmp_path, gpt2_tokenizer_dir):
    raw = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir, student={"from_teacher": {
        "count": 2, "by": "importance", "calibration_examples": 8,
        "width": {"intermediate_size": 40, "num_key_value_heads": 1, "hidden_size": 24}}})
    result = distill(raw)
    record = json.loads((tmp_path / "run" / "pruning.json").read_text())
    assert record["width"] == {"intermediate_size": [64, 40], "num_key_value_heads": [2, 1], "num_attention_heads": [4, 2],
                               "hidden_size": [32, 24]}
    student = LlamaForCausalLM.from_pretrained(result.student_dir)
    assert (student.config.num_hidden_layers, student.config.hidden_size, student.config.intermediate_size) == (2, 24, 40)
    assert result.steps == raw["train"]["max_steps"]


def test_width_alone_keeps_every_layer():
    config = parse_config({**tiny_run_config("runs/x", "tok"), "student": {"from_teacher": {"width": {"hidden_size": 16}}}})
    assert config.student.from_teacher.depth_is_set is False and config.student.from_teacher.needs_calibration


def test_a_classifier_keeps_the_layers_whose_removal_raises_its_loss_most(tmp_path):
    from test_classification_helpers import make_tokenizer_dir, run_config

    raw = run_config(tmp_path, make_tokenizer_dir(tmp_path / "tok"),
                     student={"from_teacher": {"count": 3, "by": "importance", "score": "loss_increase", "calibration_examples": 16}})
    result = distill(raw)
    record = json.loads((tmp_path / "run" / "pruning.json").read_text())
    scores = record["layer_scores"]
    assert record["layer_score"] == "loss_increase" and len(scores) == 4 and len(set(scores)) == 4
    middle = 1 if scores[1] > scores[2] else 2
    assert record["kept_layers"] == sorted([0, 3, middle]) and result.steps == 2
    assert AutoModelForSequenceClassification.from_pretrained(result.student_dir).config.num_hidden_layers == 3
