"""Tiny, fast fixtures for the robustness tests: a word-level tokenizer, synthetic text, a 4-layer Llama config.

Everything is built here (no shared data), so each run takes milliseconds per step and the tests stay fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

WORDS = tuple("the cat dog sat ran on a mat big small red blue and then saw it home day night".split())


def sentences(count: int = 48) -> list[str]:
    """Deterministic sentences over WORDS (every word appears)."""
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(5 + i % 6)) for i in range(count)]


def make_tokenizer(folder: Path, *, extra_words: tuple[str, ...] = (), chat_template: str | None = None) -> Path:
    """A word-level fast tokenizer (<unk>=0, <eos>=1, then WORDS) saved as a Hugging Face dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, **{word: i + 2 for i, word in enumerate(WORDS + extra_words)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>")
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return folder


def write_text_data(path: Path, count: int = 48) -> Path:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in sentences(count)))
    return path


def llama_config(vocab_size: int, **changes) -> dict:
    config = {"model_type": "llama", "vocab_size": vocab_size, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1,
              "max_position_embeddings": 64, "tie_word_embeddings": False}
    config.update(changes)
    return config


VOCAB = len(WORDS) + 2


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("word-tokenizer"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_text_data(tmp_path_factory.mktemp("data") / "train.jsonl")


def tiny_config(output_dir, tokenizer_dir, data_file, **sections) -> dict:
    """A complete raw run config: tiny Llama teacher (4 layers) -> 2 layers pruned from it, on the synthetic text."""
    config = {
        "output_dir": str(output_dir),
        "seed": 0,
        "tokenizer": str(tokenizer_dir),
        "teacher": {"config": llama_config(VOCAB)},
        "student": {"from_teacher": {"layers": [0, 3]}},
        "data": {"train": str(data_file), "format": "text", "max_length": 16},
        "objective": [{"name": "forward_kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}],
        "train": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-2, "log_every": 1, "progress": False},
    }
    config.update(sections)
    return config


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
