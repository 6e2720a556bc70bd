"""Shared fixtures: the real shared data folder, a real tokenizer saved once per session, tiny model configs."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def require_shared_data(*parts: str) -> Path:
    """The path under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared data set {path} (../shared/data beside the repo); not present here")
    return path


@pytest.fixture
def one_thread():
    """One torch thread for tiny models: on two shared cores, two threads were many times slower (and the float
    reduction order stays the same in the subprocesses that inherit it). Opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory) -> Path:
    """The real GPT-2 tokenizer (from ../shared/data/tokenizers), saved once as a plain Hugging Face dir."""
    from transformers import AutoTokenizer

    folder = require_shared_data("tokenizers")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file="ggml-vocab-gpt-2.gguf")
    out = tmp_path_factory.mktemp("gpt2-tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def gpt2_tokenizer(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))


def tiny_llama_config(vocab_size: int = 50257, *, layers: int = 4, hidden: int = 32, heads: int = 4, kv_heads: int = 2):
    """A tiny random Llama config for tests (seconds on CPU)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )


def tiny_run_config(output_dir, tokenizer_dir, **sections) -> dict:
    """A complete raw run config for a tiny random Llama teacher -> 2-layer pruned student on real TinyStories text.

    ``sections`` replace top-level keys (e.g. ``train={...}``, ``objective=[...]``).
    """
    stories = require_shared_data("tinystories", "tinystories_val_head.txt")
    config = {
        "output_dir": str(output_dir),
        "seed": 0,
        "tokenizer": str(tokenizer_dir),
        "teacher": {"config": {"model_type": "llama", "vocab_size": 50257, "hidden_size": 32, "intermediate_size": 64,
                               "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                               "max_position_embeddings": 256, "tie_word_embeddings": False}},
        "student": {"from_teacher": {"layers": [0, 3]}},
        "data": {"train": str(stories), "format": "text", "max_length": 32, "max_examples": 60},
        "objective": [{"name": "forward_kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}],
        "train": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1, "progress": False},
    }
    config.update(sections)
    return config


@pytest.fixture(scope="session")
def spm_tokenizer_dir(tmp_path_factory) -> Path:
    """The real Llama SentencePiece tokenizer (byte fallback, ``▁`` word markers, BOS), saved once as a HF dir."""
    from transformers import AutoTokenizer

    folder = require_shared_data("tokenizers")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file="ggml-vocab-llama-spm.gguf")
    out = tmp_path_factory.mktemp("spm-tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def spm_tokenizer(spm_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(spm_tokenizer_dir))
