"""A teacher-signal cache for seq2seq_lm: it holds the teacher's distribution at every decoder position, and a run
distilled from a k = V cache trains like the run with the live teacher (same losses, same weights)."""

from __future__ import annotations

import json

import pytest
import torch

from lmdistill import distill
from lmdistill.cache import TeacherCache, build_teacher_cache
from lmdistill.config import parse_config
from lmdistill.errors import UserError
from lmdistill.models.build import load_teacher
from lmdistill.models.loading import load_tokenizer
from lmdistill.tasks import get_task
from test_cache import VOCAB, char_tokenizer_dir  # noqa: F401  (fixture)
from test_cache_engine import _losses, assert_same_weights

pytestmark = pytest.mark.usefixtures("one_thread")

EOS = VOCAB - 1  # the char tokenizer's <eos>, also its padding
T5 = {"model_type": "t5", "vocab_size": VOCAB, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2,
      "num_decoder_layers": 2, "num_heads": 4, "pad_token_id": EOS, "eos_token_id": EOS, "decoder_start_token_id": EOS}
PAIRS = [("a dog runs", "ein Hund rennt"), ("two cats", "zwei Katzen"), ("the red car is fast", "das rote Auto ist schnell"),
         ("hello", "hallo"), ("a man reads a book", "ein Mann liest ein Buch"), ("blue sky", "blauer Himmel")]


@pytest.fixture
def seq2seq_run(tmp_path, char_tokenizer_dir):
    """A seq2seq run config whose teacher is a saved tiny T5 model dir (so a cached run can prune from it too)."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in PAIRS))
    teacher_dir = tmp_path / "teacher"
    teacher = load_teacher(parse_config(_config(tmp_path / "x", char_tokenizer_dir, data, {"config": T5})).teachers[0],
                           model_class=get_task("seq2seq_lm").model_class, seed=0)
    teacher.save_pretrained(teacher_dir)
    return _config(tmp_path / "live", char_tokenizer_dir, data, {"path": str(teacher_dir)})


def _config(output_dir, tokenizer_dir, data, teacher) -> dict:
    return {"output_dir": str(output_dir), "seed": 0, "task": "seq2seq_lm", "tokenizer": str(tokenizer_dir),
            "teacher": teacher, "student": {"from_teacher": {"encoder": {"layers": [1]}, "decoder": {"layers": [0]}}},
            "data": {"train": str(data), "max_length": 32},
            "objective": [{"name": "forward_kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}],
            "train": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1, "progress": False}}


def test_a_seq2seq_cache_holds_the_teachers_distribution_at_every_target_position(tmp_path, seq2seq_run):
    config = parse_config(seq2seq_run)
    cache = TeacherCache(build_teacher_cache(config, tmp_path / "cache", VOCAB, examples_per_shard=4))
    tokenizer = load_tokenizer(config.tokenizer)
    examples, _ = get_task("seq2seq_lm").load_datasets(config.data, tokenizer, config.seed)
    teacher = load_teacher(config.teachers[0], model_class=get_task("seq2seq_lm").model_class, seed=0)
    for index in (0, 2, 5):
        labels = examples[index]["labels"]
        # Independently: transformers' own T5 builds the decoder inputs from the labels (shift right behind start).
        with torch.no_grad():
            logits = teacher(input_ids=torch.tensor([examples[index]["input_ids"]]), labels=torch.tensor([labels])).logits
        expected = torch.log_softmax(logits[0].double(), -1)
        signal = cache.example(index)
        assert signal.log_probs.shape == (len(labels), VOCAB)  # one row per target token, source tokens not stored
        stored = torch.empty(len(labels), VOCAB, dtype=torch.float64).scatter_(
            -1, signal.token_ids.long(), signal.log_probs.double())
        torch.testing.assert_close(stored, expected, rtol=0, atol=1e-5)


def test_a_run_from_a_full_seq2seq_cache_trains_like_the_live_teacher_run(tmp_path, seq2seq_run):
    live = distill(seq2seq_run)
    cache = build_teacher_cache(parse_config(seq2seq_run), tmp_path / "cache", VOCAB)
    # The student is still pruned from the teacher: from the model dir the cache's manifest records.
    cached = distill({**seq2seq_run, "output_dir": str(tmp_path / "cached"), "teacher": {"cache": str(cache)}})
    for live_row, cached_row in zip(_losses(tmp_path / "live"), _losses(tmp_path / "cached"), strict=True):
        for key in ("loss", "loss/forward_kl", "loss/ce"):
            assert cached_row[key] == pytest.approx(live_row[key], rel=1e-5, abs=1e-7), key
    assert_same_weights(cached.student_dir, live.student_dir)


def test_a_cache_for_a_task_without_per_token_signals_is_one_line(tmp_path, seq2seq_run):
    raw = {**seq2seq_run, "task": "sequence_classification", "teacher": {"cache": str(tmp_path)}, "student": {"config": T5}}
    raw["data"] = {"train": seq2seq_run["data"]["train"]}
    with pytest.raises(UserError, match="per-token signals"):
        distill(raw)
