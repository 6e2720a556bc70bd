"""Causal-LM examples: exact ids/labels for text (packed and not) and prompt/completion, the pad==eos trap, splits."""

from __future__ import annotations

import copy
import json

import pytest

from lmdistill.config import DataConfig
from lmdistill.data import (
    build_causal_examples,
    build_causal_examples_with_stats,
    collate_causal,
    load_causal_datasets,
    loss_token_fraction,
    split_eval,
)
from lmdistill.errors import UserError

from conftest import require_shared_data

DOCS = ["Once upon a time there was a cat.", "The dog barked.", "Hi"]
EOS = 50256
IGNORE = -100


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_text_unpacked_appends_eos_and_truncates(gpt2_tokenizer):
    data = DataConfig(train="x", format="text", pack=False, max_length=5)
    examples, stats = build_causal_examples_with_stats([{"text": d} for d in DOCS], gpt2_tokenizer, data)
    expected = [(ids(gpt2_tokenizer, d) + [EOS])[:5] for d in DOCS]
    assert [e["input_ids"] for e in examples] == expected
    assert [e["labels"] for e in examples] == expected
    long_doc = len(ids(gpt2_tokenizer, DOCS[0])) + 1
    assert long_doc > 5 and expected[2] == ids(gpt2_tokenizer, "Hi") + [EOS]
    assert (stats.records, stats.examples, stats.truncated, stats.dropped) == (3, 3, 2, 0)
    # Every position that predicts a token is in the loss: len - 1 per example (nothing predicts the first token).
    assert stats.tokens == sum(map(len, expected)) and stats.loss_tokens == stats.predicted_positions == stats.tokens - len(expected)


def test_text_packing_blocks_are_the_concatenation(gpt2_tokenizer):
    stream = [t for d in DOCS for t in ids(gpt2_tokenizer, d) + [EOS]]
    for max_length in (4, 5):
        data = DataConfig(train="x", max_length=max_length, pack=True)
        examples = build_causal_examples([{"text": d} for d in DOCS], gpt2_tokenizer, data)
        blocks = [e["input_ids"] for e in examples]
        assert all(len(b) == max_length for b in blocks[:-1])
        remainder = len(stream) % max_length
        kept_stream = stream if remainder != 1 else stream[:-1]
        assert [t for b in blocks for t in b] == kept_stream
        assert all(e["labels"] == e["input_ids"] for e in examples)


def test_packing_drops_a_one_token_remainder(gpt2_tokenizer):
    stream = [t for d in DOCS for t in ids(gpt2_tokenizer, d) + [EOS]]
    max_length = next(m for m in range(2, len(stream)) if len(stream) % m == 1)
    data = DataConfig(train="x", max_length=max_length)
    examples = build_causal_examples([{"text": d} for d in DOCS], gpt2_tokenizer, data)
    assert len(examples) == len(stream) // max_length
    assert examples[-1]["input_ids"] == stream[len(stream) - 1 - max_length : len(stream) - 1]


def test_prompt_completion_exact_ids_and_labels(gpt2_tokenizer):
    records = [{"q": "Question: 2+2?", "a": " 4"}, {"q": "Say hi.", "a": " Hi there, friend!"}]
    data = DataConfig(train="x", format="prompt_completion", prompt_field="q", completion_field="a", max_length=64)
    examples = build_causal_examples(records, gpt2_tokenizer, data)
    for record, example in zip(records, examples):
        prompt, completion = ids(gpt2_tokenizer, record["q"]), ids(gpt2_tokenizer, record["a"])
        assert example["input_ids"] == prompt + completion + [EOS]
        assert example["labels"] == [IGNORE] * len(prompt) + completion + [EOS]


def test_prompt_completion_truncation_and_drop(gpt2_tokenizer):
    short_prompt = "Say hi."
    long_prompt = "This prompt is far longer than the tiny limit we set for the test."
    completion = " Hello to you, and to everyone."
    p_short, p_long, c = ids(gpt2_tokenizer, short_prompt), ids(gpt2_tokenizer, long_prompt), ids(gpt2_tokenizer, completion)
    max_length = len(p_short) + 2
    assert len(p_long) >= max_length
    records = [{"prompt": short_prompt, "completion": completion}, {"prompt": long_prompt, "completion": completion}]
    data = DataConfig(train="x", format="prompt_completion", max_length=max_length)
    examples, stats = build_causal_examples_with_stats(records, gpt2_tokenizer, data)
    assert examples == [{"input_ids": p_short + c[:2], "labels": [IGNORE] * len(p_short) + c[:2]}]
    assert (stats.records, stats.examples, stats.truncated, stats.dropped) == (2, 1, 2, 1)
    assert stats.loss_tokens == 2 and stats.tokens == max_length
    assert stats.loss_token_fraction == pytest.approx(2 / (max_length - 1), abs=0)  # of the predicted positions


def test_eos_stays_in_loss_when_pad_equals_eos(gpt2_tokenizer):
    tokenizer = copy.deepcopy(gpt2_tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == EOS
    records = [{"prompt": "A<|endoftext|>B", "completion": " end<|endoftext|> more"}, {"prompt": "Hi", "completion": "!"}]
    data = DataConfig(train="x", format="prompt_completion", max_length=32)
    examples = build_causal_examples(records, tokenizer, data)
    prompt0, completion0 = ids(tokenizer, records[0]["prompt"]), ids(tokenizer, records[0]["completion"])
    assert EOS in prompt0 and EOS in completion0  # special-token text is the EOS token itself
    assert examples[0]["labels"] == [IGNORE] * len(prompt0) + completion0 + [EOS]
    batch = collate_causal(examples, pad_token_id=tokenizer.pad_token_id)
    lengths = [len(e["input_ids"]) for e in examples]
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    short = 1  # the second example is shorter: its real EOS is in the loss, its padding (same id) is not
    assert batch["labels"][short, lengths[short] - 1].item() == EOS
    assert batch["labels"][short, lengths[short] :].tolist() == [IGNORE] * (max(lengths) - lengths[short])
    assert batch["input_ids"][short, lengths[short] :].tolist() == [EOS] * (max(lengths) - lengths[short])


def test_missing_field_names_field_config_key_and_keys(gpt2_tokenizer):
    data = DataConfig(train="x", format="prompt_completion", max_length=8)
    records = [{"prompt": "a", "completion": "b"}, {"instruction": "a", "output": "b"}]
    with pytest.raises(UserError, match=r"record 1 has no field 'prompt'; set data\.prompt_field to one of its keys: 'instruction', 'output'"):
        build_causal_examples(records, gpt2_tokenizer, data)
    with pytest.raises(UserError, match=r"no field 'text'; set data\.text_field .*'sentence'"):
        build_causal_examples([{"sentence": "x"}], gpt2_tokenizer, DataConfig(train="x"))
    with pytest.raises(UserError, match=r"record 0: field 'text' holds int, expected str; fix the data or point data\.text_field"):
        build_causal_examples([{"text": 3}], gpt2_tokenizer, DataConfig(train="x"))


def test_tokenizer_without_eos(gpt2_tokenizer):
    tokenizer = copy.deepcopy(gpt2_tokenizer)
    tokenizer.eos_token = None
    with pytest.raises(UserError, match=r"tokenizer has no EOS token"):
        build_causal_examples([{"text": "a b"}], tokenizer, DataConfig(train="x"))


def test_loss_token_fraction_by_hand():
    examples = [{"input_ids": [1, 2, 3, 4], "labels": [IGNORE, IGNORE, 3, 4]}, {"input_ids": [5, 6], "labels": [5, IGNORE]}]
    assert loss_token_fraction(examples) == 3 / 6
    assert loss_token_fraction([]) == 0.0


def test_split_eval_is_deterministic_and_disjoint():
    items = list(range(20))
    train, held = split_eval(items, 0.25, seed=3)
    assert len(held) == 5 and sorted(train + held) == items and not set(train) & set(held)
    assert train == sorted(train) and held == sorted(held)
    assert split_eval(items, 0.25, seed=3) == (train, held)
    assert split_eval(items, 0.25, seed=4) != (train, held)
    assert split_eval(items, 0.0, seed=3) == (items, [])
    assert len(split_eval(items, 0.01, seed=3)[1]) == 1  # a positive fraction always holds something out
    with pytest.raises(UserError, match=r"eval_fraction=0\.9 of 2 records leaves nothing to train on"):
        split_eval([1, 2], 0.9, seed=0)


def test_load_causal_datasets_fraction_and_eval_file(tmp_path, gpt2_tokenizer):
    records = [{"text": f"Story number {i} is short."} for i in range(10)]
    train_path, eval_path = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train_path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    eval_path.write_text(json.dumps({"text": "An eval story."}) + "\n", encoding="utf-8")

    data = DataConfig(train=str(train_path), eval_fraction=0.2, pack=False, max_length=32)
    train, held = load_causal_datasets(data, gpt2_tokenizer, seed=1)
    train_records, eval_records = split_eval(records, 0.2, seed=1)
    assert train == build_causal_examples(train_records, gpt2_tokenizer, data)
    assert held == build_causal_examples(eval_records, gpt2_tokenizer, data) and len(held) == 2

    data = DataConfig(train=str(train_path), eval=str(eval_path), pack=False, max_length=32, max_examples=4)
    train, held = load_causal_datasets(data, gpt2_tokenizer, seed=1)
    assert [e["input_ids"] for e in train] == [ids(gpt2_tokenizer, r["text"]) + [EOS] for r in records[:4]]
    eval_ids = ids(gpt2_tokenizer, "An eval story.") + [EOS]
    assert held == [{"input_ids": eval_ids, "labels": eval_ids}]

    assert load_causal_datasets(DataConfig(train=str(train_path), pack=False), gpt2_tokenizer, seed=1)[1] is None


def test_load_causal_datasets_empty_after_tokenisation(tmp_path, gpt2_tokenizer):
    path = tmp_path / "pc.jsonl"
    path.write_text(json.dumps({"prompt": "a long prompt that fills the window", "completion": " x"}) + "\n", encoding="utf-8")
    data = DataConfig(train=str(path), format="prompt_completion", max_length=3)
    with pytest.raises(UserError, match=r"no training examples left after tokenisation \(1 of 1 records dropped\); raise data\.max_length"):
        load_causal_datasets(data, gpt2_tokenizer, seed=0)


def test_real_tinystories_packed_and_alpaca(gpt2_tokenizer):
    stories = require_shared_data("tinystories", "tinystories_val_head.txt")
    alpaca = require_shared_data("alpaca", "alpaca_5000_subset_pr152.json")
    data = DataConfig(train=str(stories), max_length=128, max_examples=50)
    train, held = load_causal_datasets(data, gpt2_tokenizer, seed=0)
    blocks_text = gpt2_tokenizer.decode([t for e in train for t in e["input_ids"]])
    first_story = stories.read_text(encoding="utf-8").split("\n\n")[0].strip()
    assert held is None and blocks_text.startswith(first_story + "<|endoftext|>")
    assert all(len(e["input_ids"]) == 128 for e in train[:-1]) and loss_token_fraction(train) == 1.0

    data = DataConfig(train=str(alpaca), format="prompt_completion", prompt_field="instruction",
                      completion_field="output", max_length=256, pack=False, max_examples=20, eval_fraction=0.1)
    train, held = load_causal_datasets(data, gpt2_tokenizer, seed=0)
    assert len(train) + len(held) == 20 and len(held) == 2
    first = split_eval(list(range(20)), 0.1, seed=0)[0][0]
    record = json.loads(alpaca.read_text(encoding="utf-8"))[first]
    prompt, completion = ids(gpt2_tokenizer, record["instruction"]), ids(gpt2_tokenizer, record["output"])
    assert train[0] == {"input_ids": prompt + completion + [EOS], "labels": [IGNORE] * len(prompt) + completion + [EOS]}
