"""lmdistill finetune: a labels-only engine run whose output is a teacher; accuracy rises on separable toy data."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertModel, BertConfig

from lmdistill.cli import main
from lmdistill.config import DataConfig
from lmdistill.data.classification import build_classification_examples
from lmdistill.data.readers import read_records
from lmdistill.errors import UserError
from lmdistill.eval.classification import accuracy
from lmdistill.api import finetune
from lmdistill.finetune import finetune_config
from lmdistill.models.loading import load_tokenizer, model_from_config
from lmdistill.tasks.classification import predict_logits
from test_classification_helpers import VOCAB, make_tokenizer_dir, tiny_bert, write_sentiment  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tokenizer_dir(tmp_path_factory.mktemp("vocab"))


def _config(tmp_path, tokenizer_dir, steps=40):
    return {"output_dir": str(tmp_path / "tuned"), "seed": 0, "task": "sequence_classification", "tokenizer": str(tokenizer_dir),
            "student": {"config": tiny_bert(layers=2)},
            "data": {"train": str(write_sentiment(tmp_path / "train.jsonl", 64, seed=0)),
                     "eval": str(write_sentiment(tmp_path / "eval.jsonl", 32, seed=1)), "max_length": 16},
            "train": {"max_steps": steps, "batch_size": 16, "learning_rate": 3e-3, "log_every": 10, "progress": False}}


def _eval_accuracy(model, tmp_path, tokenizer_dir) -> float:
    tokenizer = load_tokenizer(str(tokenizer_dir))
    examples = build_classification_examples(read_records(str(tmp_path / "eval.jsonl")), tokenizer, DataConfig(train="-"))
    logits = predict_logits(model, examples, tokenizer.pad_token_id, 16, torch.device("cpu"))
    return accuracy(logits.argmax(-1), [e["label"] for e in examples])


def test_finetune_raises_accuracy_on_separable_data(tmp_path, tokenizer_dir):
    raw = _config(tmp_path, tokenizer_dir)
    # The engine builds a config student with seed + 1: the same untrained model, for the accuracy before tuning.
    before = _eval_accuracy(model_from_config(tiny_bert(layers=2), model_class=AutoModelForSequenceClassification, seed=1), tmp_path, tokenizer_dir)
    result = finetune(raw)
    after = _eval_accuracy(AutoModelForSequenceClassification.from_pretrained(result.student_dir), tmp_path, tokenizer_dir)
    assert before <= 0.75 and after >= 0.95, (before, after)


def test_finetune_config_is_labels_only_and_has_no_teacher(tmp_path, tokenizer_dir):
    config = finetune_config(_config(tmp_path, tokenizer_dir))
    assert [term.name for term in config.objective] == ["ce"]
    assert config.teacher is None and config.teachers == []
    with pytest.raises(UserError, match="label terms only.*forward_kl"):
        finetune_config({**_config(tmp_path, tokenizer_dir), "objective": [{"name": "forward_kl"}]})
    with pytest.raises(UserError, match="has no teacher"):
        finetune_config({**_config(tmp_path, tokenizer_dir), "teacher": {"config": tiny_bert()}})
    with pytest.raises(UserError, match="student must give"):
        finetune_config({**_config(tmp_path, tokenizer_dir), "student": {"from_teacher": {"every": 2}}})


def test_num_labels_gives_a_bare_encoder_a_fresh_head(tmp_path, tokenizer_dir):
    encoder_dir = tmp_path / "encoder"
    settings = {k: v for k, v in tiny_bert(layers=2).items() if k not in ("model_type", "num_labels")}
    BertModel(BertConfig(**settings)).save_pretrained(encoder_dir)
    raw = {**_config(tmp_path, tokenizer_dir, steps=2), "student": {"path": str(encoder_dir)}, "num_labels": 3}
    config = finetune_config(raw)
    assert config.student.path == str(tmp_path / "tuned" / "initial") and config.teacher is None
    assert AutoModelForSequenceClassification.from_pretrained(config.student.path).config.num_labels == 3


def test_cli_finetune(tmp_path, tokenizer_dir, capsys):
    import yaml

    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, tokenizer_dir, steps=2)))
    assert main(["finetune", "--config", str(path), "train.max_steps=1"]) == 0
    assert "finished after 1 steps" in capsys.readouterr().out
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "tuned" / "student").config.num_hidden_layers == 2
