"""Shared pieces for the classification tests: a tiny WordPiece tokenizer, tiny random BERT configs, toy data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

POSITIVE = ["good", "great", "fine", "love"]
NEGATIVE = ["bad", "awful", "poor", "hate"]
FILLER = ["the", "movie", "was", "a", "film", "is", "not", "very", "plot"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + POSITIVE + NEGATIVE + FILLER


def make_tokenizer_dir(folder: Path) -> Path:
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder / "tokenizer")
    return folder / "tokenizer"


def tiny_bert(layers: int = 4, num_labels: int = 2) -> dict:
    """A tiny random BERT config dict (hidden 32, 4 heads)."""
    return {"model_type": "bert", "vocab_size": len(VOCAB), "hidden_size": 32, "num_hidden_layers": layers,
            "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64, "num_labels": num_labels}


def write_sentiment(path: Path, count: int, seed: int = 0) -> Path:
    """JSONL rows {"text": "the movie was <word> ...", "label": 1 for a positive word, 0 for a negative one}."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = index % 2
        word = rng.choice(POSITIVE if label else NEGATIVE)
        rows.append({"text": f"the {rng.choice(['movie', 'film', 'plot'])} was {word}", "label": label})
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def run_config(tmp_path: Path, tokenizer_dir: Path, **sections) -> dict:
    """A raw classification run config: tiny 4-layer BERT teacher -> 2-layer student pruned from it."""
    config = {
        "output_dir": str(tmp_path / "run"), "seed": 0, "task": "sequence_classification", "tokenizer": str(tokenizer_dir),
        "teacher": {"config": tiny_bert()}, "student": {"from_teacher": {"layers": [0, 3]}},
        "data": {"train": str(write_sentiment(tmp_path / "train.jsonl", 32)), "max_length": 16},
        "objective": [{"name": "soft_ce", "weight": 1.0, "temperature": 2.0}, {"name": "ce", "weight": 1.0}],
        "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-3, "log_every": 1, "progress": False},
    }
    config.update(sections)
    return config
