"""Sequence classification: data (pairs, string labels, range errors), metrics by hand, end-to-end distillation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lmdistill import distill
from lmdistill.config import DataConfig
from lmdistill.data.classification import build_classification_examples, collate_classification, label_id
from lmdistill.errors import UserError
from lmdistill.tasks import get_task
from lmdistill.tasks.classification import classification_scores
from lmdistill.objective import forward_features
from lmdistill.objective import Needs
from test_classification_helpers import make_tokenizer_dir, run_config, tiny_bert  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tokenizer_dir(tmp_path_factory.mktemp("vocab"))


def test_distils_end_to_end_and_reloads_as_a_sequence_classifier(tmp_path, tokenizer_dir):
    config = run_config(tmp_path, tokenizer_dir, data={**run_config(tmp_path, tokenizer_dir)["data"], "eval_fraction": 0.25},
                        train={"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3, "log_every": 1, "eval_every": 2, "progress": False})
    config["objective"].append({"name": "attention_mse", "weight": 0.5, "layers": "uniform"})
    result = distill(config)
    assert result.steps == 2
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["split"] == "train"]
    for line in train:
        assert line["loss"] == pytest.approx(line["loss/soft_ce"] + line["loss/ce"] + 0.5 * line["loss/attention_mse"], rel=1e-5)
    evaluation = [line for line in lines if line["split"] == "eval"][-1]
    assert set(evaluation) >= {"eval/accuracy", "eval/macro_f1", "eval/mcc", "eval/teacher_agreement"}
    student = AutoModelForSequenceClassification.from_pretrained(result.student_dir)
    assert student.config.num_hidden_layers == 2 and student.config.num_labels == 2
    tokenizer = AutoTokenizer.from_pretrained(result.student_dir)
    logits = student(**tokenizer(["the movie was good"], return_tensors="pt")).logits
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def test_first_step_terms_equal_hand_computed_ce_and_soft_ce(tmp_path, tokenizer_dir):
    """Step 1's logged terms against CE and T²·soft-CE computed in float64 from the same two initial models."""
    from lmdistill.config import parse_config
    from lmdistill.models.loading import load_tokenizer
    from lmdistill.models.build import build_student, load_teacher

    no_dropout = {**tiny_bert(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    raw = run_config(tmp_path, tokenizer_dir, teacher={"config": no_dropout},
                     train={"max_steps": 1, "batch_size": 32, "log_every": 1, "progress": False})
    config = parse_config(raw)
    teacher = load_teacher(config.teachers[0], model_class=get_task(config.task).model_class, seed=0)
    student = build_student(config.student, teacher, model_class=get_task(config.task).model_class, seed=0)
    task = get_task("sequence_classification")
    examples, _ = task.load_datasets(config.data, load_tokenizer(str(tokenizer_dir)), 0)
    batch = task.collate(examples, 0)  # batch 32 = every example: the step's order does not change the means
    with torch.no_grad():
        z_t = teacher(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits.double()
        z_s = student(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits.double()
    p_t = torch.softmax(z_t / 2.0, -1)
    soft_ce = float((-(p_t * torch.log_softmax(z_s / 2.0, -1)).sum(-1) * 4.0).mean())
    ce = float(-torch.log_softmax(z_s, -1)[torch.arange(32), batch["labels"]].mean())
    distill(raw)
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert logged["loss/soft_ce"] == pytest.approx(soft_ce, rel=1e-5)
    assert logged["loss/ce"] == pytest.approx(ce, rel=1e-5)


def test_string_labels_map_to_ids_and_integer_strings_are_ids():
    assert label_id("neg", ["neg", "pos"], where="r") == 0 and label_id("pos", ["neg", "pos"], where="r") == 1
    assert label_id("1", None, where="r") == 1 and label_id(2, None, where="r") == 2 and label_id(1.0, None, where="r") == 1
    assert label_id("1", ["neg", "pos"], where="r") == 1  # an id below len(labels) is accepted as is


def test_bad_labels_are_user_errors():
    with pytest.raises(UserError, match="label 2 is out of range.*2 classes"):
        label_id(2, ["neg", "pos"], where="record 3")
    with pytest.raises(UserError, match="label -1 is out of range"):
        label_id("-1", None, where="record 0")
    with pytest.raises(UserError, match="'meh' is not one of"):
        label_id("meh", ["neg", "pos"], where="record 0")
    with pytest.raises(UserError, match="set data.labels"):
        label_id("pos", None, where="record 0")


def test_label_beyond_the_models_classes_is_a_user_error(tmp_path, tokenizer_dir):
    train = tmp_path / "three.jsonl"
    train.write_text("\n".join(json.dumps({"text": "the movie was good", "label": i % 3}) for i in range(16)))
    config = run_config(tmp_path, tokenizer_dir, data={"train": str(train), "max_length": 16})
    with pytest.raises(UserError, match="the data has label 2 but the model outputs only 2 classes"):
        distill(config)


def test_string_labels_in_a_tsv_train_end_to_end(tmp_path, tokenizer_dir):
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tsentiment\n" + "".join(f"the movie was {w}\t{s}\n" for w, s in [("good", "pos"), ("bad", "neg")] * 8))
    data = {"train": str(train), "text_field": "sentence", "label_field": "sentiment", "labels": ["neg", "pos"], "max_length": 16}
    task = get_task("sequence_classification")
    from lmdistill.models.loading import load_tokenizer

    examples, _ = task.load_datasets(DataConfig(**data), load_tokenizer(str(tokenizer_dir)), 0)
    assert [e["label"] for e in examples[:4]] == [1, 0, 1, 0]
    assert distill(run_config(tmp_path, tokenizer_dir, data=data)).steps == 2


def test_pairs_get_segment_ids_and_the_engine_passes_them(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = DataConfig(train="-", text_field="premise", text_pair_field="hypothesis", max_length=32)
    records = [{"premise": "the movie was good", "hypothesis": "great film", "label": 1},
               {"premise": "bad", "hypothesis": "the plot was not very good", "label": 0}]
    examples = build_classification_examples(records, tokenizer, data)
    expected = tokenizer("the movie was good", "great film")
    assert examples[0]["input_ids"] == expected["input_ids"] and examples[0]["token_type_ids"] == expected["token_type_ids"]
    batch = collate_classification(examples, tokenizer.pad_token_id)
    second = tokenizer("bad", "the plot was not very good")
    length = len(second["input_ids"])
    assert batch["token_type_ids"][1, :length].tolist() == second["token_type_ids"] and batch["labels"].tolist() == [1, 0]
    pad = batch["input_ids"].shape[1] - len(expected["input_ids"])
    assert batch["token_type_ids"][0].tolist() == expected["token_type_ids"] + [0] * pad
    assert batch["attention_mask"][0].tolist() == [1] * len(expected["input_ids"]) + [0] * pad
    from lmdistill.models.loading import model_from_config

    model = model_from_config(tiny_bert(), model_class=AutoModelForSequenceClassification).eval()
    needs = Needs(logits=True, hidden_states=False, attentions=False, teacher=True)
    task = get_task("sequence_classification")
    got = forward_features(model, batch, needs, task, grad=False).logits
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]).logits
        zeros = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(got, zeros)  # the segment ids changed the output, so passing them matters


def test_scores_against_hand_computed_values():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    student_predictions = [0, 1, 1, 1, 0, 2]
    teacher_predictions = [0, 0, 1, 1, 1, 1]
    student_logits = torch.full((6, 3), -1.0, dtype=torch.float64)
    student_logits[torch.arange(6), torch.tensor(student_predictions)] = 1.0
    teacher_logits = torch.zeros(6, 3)
    teacher_logits[torch.arange(6), torch.tensor(teacher_predictions)] = 5.0
    scores = classification_scores(student_logits, labels, teacher_logits)
    assert scores["eval/accuracy"] == pytest.approx(4 / 6)
    # F1 per class: 0 -> 2·1/(2·1+1+1), 1 -> 2·2/(2·2+1+1), 2 -> 2·1/(2·1+0+0)
    assert scores["eval/macro_f1"] == pytest.approx((0.5 + 4 / 6 + 1.0) / 3)
    # MCC: c=4, s=6, t=p=(2,3,1): (4·6 − 14) / (36 − 14)
    assert scores["eval/mcc"] == pytest.approx(10 / 22)
    assert scores["eval/teacher_agreement"] == pytest.approx(3 / 6)
    assert scores["eval/teacher_accuracy"] == pytest.approx(5 / 6)
    # CE: a correct row has −log(e/(e + 2e⁻¹)), a wrong one −log(e⁻¹/(e + 2e⁻¹))
    right = -math.log(math.e / (math.e + 2 / math.e))
    wrong = -math.log((1 / math.e) / (math.e + 2 / math.e))
    assert scores["eval/loss"] == pytest.approx((4 * right + 2 * wrong) / 6, rel=1e-12)
