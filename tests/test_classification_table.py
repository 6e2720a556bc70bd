"""The teacher/student comparison table: rows, means, spreads, ratios and gains computed by hand."""

from __future__ import annotations

import pytest

import torch
from transformers import AutoModelForSequenceClassification

from lmdistill.tasks.classification_table import comparison_table, dev_accuracy, size_and_latency
from test_classification_helpers import tiny_bert  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_table_rows_by_hand():
    results = [{"method": "teacher", "layers": 6, "seed": 0, "accuracy": 0.8},
               {"method": "distilbert", "layers": 3, "seed": 0, "accuracy": 0.78},
               {"method": "distilbert", "layers": 3, "seed": 1, "accuracy": 0.80},
               {"method": "label_only", "layers": 3, "seed": 0, "accuracy": 0.70},
               {"method": "label_only", "layers": 3, "seed": 1, "accuracy": 0.74}]
    sizes = {"teacher": {"parameters": 22_000_000, "latency_ms": 2.0}, "L3": {"parameters": 11_500_000, "latency_ms": 1.25}}
    lines = comparison_table(results, sizes).splitlines()
    assert lines[2] == "| teacher | 6 | 22.00M | 2.00 | 80.00 | – | 1 | 100.0 | – |"
    # label-only first at each depth: mean 72, population std 2; distilbert mean 79 = 98.75 % of 80, +7 points
    assert lines[3] == "| label_only | 3 | 11.50M | 1.25 | 72.00 ± 2.00 | 70.00–74.00 | 2 | 90.0 | – |"
    assert lines[4] == "| distilbert | 3 | 11.50M | 1.25 | 79.00 ± 1.00 | 78.00–80.00 | 2 | 98.8 | +7.00 |"


def test_accuracy_and_size_of_a_saved_model(tmp_path):
    from lmdistill.models.loading import count_parameters, model_from_config

    model = model_from_config(tiny_bert(layers=1), model_class=AutoModelForSequenceClassification).eval()
    model.save_pretrained(tmp_path / "m")
    examples = [{"input_ids": [2, 5 + i, 3], "token_type_ids": [0, 0, 0], "label": i % 2} for i in range(6)]
    with torch.no_grad():
        predictions = model(input_ids=torch.tensor([e["input_ids"] for e in examples])).logits.argmax(-1).tolist()
    expected = sum(p == e["label"] for p, e in zip(predictions, examples)) / 6
    assert dev_accuracy(tmp_path / "m", examples, 0) == expected
    size = size_and_latency(tmp_path / "m", examples, 0)
    assert size["parameters"] == count_parameters(model) and size["latency_ms"] > 0
