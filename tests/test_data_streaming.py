"""Streamed corpora (`datasets` IterableDataset): the same examples as in memory, and an exact resumable position."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import require_shared_data, tiny_run_config
from lmdistill import distill
from lmdistill.config import DataConfig, parse_config
from lmdistill.data import build_causal_examples
from lmdistill.data.readers import read_records
from lmdistill.data.streaming import StreamedBatches, stream_causal_examples
from lmdistill.errors import UserError
from test_data_chat import CONVERSATION, SIMPLE_TEMPLATE

pytestmark = pytest.mark.usefixtures("one_thread")


def _take(stream, count):
    return [stream.next_example() for _ in range(count)]


def _in_memory(source, tokenizer, data):
    return build_causal_examples(read_records(source, max_examples=data.max_examples), tokenizer, data)


@pytest.fixture(scope="module")
def stories():
    return str(require_shared_data("tinystories", "tinystories_val_head.txt"))


def test_packed_text_stream_equals_the_in_memory_blocks_and_wraps_to_a_second_pass(stories, gpt2_tokenizer):
    data = DataConfig(train=stories, max_length=48, max_examples=40, streaming=True)
    expected = _in_memory(stories, gpt2_tokenizer, data)
    assert len(expected) > 20 and len(expected[-1]["input_ids"]) < 48  # a short last block ends the pass
    stream = stream_causal_examples(data, gpt2_tokenizer)
    assert _take(stream, len(expected)) == expected
    assert _take(stream, 3) == expected[:3] and stream.passes == 1


@pytest.mark.parametrize("kind", ["prompt_completion", "chat", "text_unpacked"])
def test_record_formats_stream_as_the_in_memory_examples(tmp_path, gpt2_tokenizer, kind):
    tokenizer = copy.deepcopy(gpt2_tokenizer)
    tokenizer.chat_template = SIMPLE_TEMPLATE
    path = tmp_path / "records.jsonl"
    if kind == "prompt_completion":
        records = [{"prompt": f"Question {i}: what is {i} + {i}?", "completion": f" {2 * i}"} for i in range(9)]
        data = DataConfig(train=str(path), format="prompt_completion", max_length=12, streaming=True)
    elif kind == "chat":
        records = [{"messages": CONVERSATION[: 3 + 2 * (i % 2)]} for i in range(6)]
        data = DataConfig(train=str(path), format="chat", max_length=40, streaming=True)
    else:
        records = [{"text": "word " * (3 + i)} for i in range(8)]
        data = DataConfig(train=str(path), format="text", pack=False, max_length=6, streaming=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    expected = _in_memory(str(path), tokenizer, data)
    assert len(expected) == len(records)
    assert _take(stream_causal_examples(data, tokenizer), len(expected)) == expected


def test_a_restored_position_continues_at_the_same_example(stories, gpt2_tokenizer):
    """Positions taken mid-document (tokens left in the packing buffer) and across the end of a pass."""
    data = DataConfig(train=stories, max_length=48, max_examples=40, streaming=True)
    reference = stream_causal_examples(data, gpt2_tokenizer)
    straight = _take(reference, 60)
    for consumed in (0, 1, 7, 33, 45):
        stream = stream_causal_examples(data, gpt2_tokenizer)
        _take(stream, consumed)
        position = json.loads(json.dumps(stream.position()))  # what a checkpoint's trainer_state.json holds
        resumed = stream_causal_examples(data, gpt2_tokenizer)
        resumed.restore(position)
        assert _take(resumed, 60 - consumed) == straight[consumed:], consumed
    mid_document = stream_causal_examples(data, gpt2_tokenizer)
    _take(mid_document, 7)
    assert mid_document.position()["buffer"]  # the restored state really carried unpacked tokens


def test_streamed_batches_keep_the_position_of_the_last_two_steps(stories, gpt2_tokenizer):
    data = DataConfig(train=stories, max_length=48, max_examples=40, streaming=True)
    batches = StreamedBatches(stream_causal_examples(data, gpt2_tokenizer), 4)
    steps = [batches.global_batch(step) for step in range(3)]
    assert [ids for ids, _ in steps] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    # A bad step saves a checkpoint that repeats step 2: its position is the one before step 2's batch.
    again = StreamedBatches(stream_causal_examples(data, gpt2_tokenizer), 4)
    again.restore(batches.position(2), 2)
    assert again.global_batch(2) == steps[2]
    with pytest.raises(RuntimeError, match="read in order"):
        again.global_batch(5)


def test_streaming_settings_are_checked_at_load(tmp_path, gpt2_tokenizer_dir, stories):
    base = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir)
    with pytest.raises(UserError, match="set train.max_steps instead of train.epochs"):
        parse_config({**base, "data": {**base["data"], "streaming": True}, "train": {"epochs": 1}})
    with pytest.raises(UserError, match="give data.eval instead of data.eval_fraction"):
        parse_config({**base, "data": {**base["data"], "streaming": True, "eval_fraction": 0.1}})
    with pytest.raises(UserError, match="cannot stream"):
        stream_causal_examples(DataConfig(train="no-such-owner/no-such-corpus-xyz", streaming=True), None)


def test_a_streamed_run_resumed_after_an_interruption_ends_with_the_uninterrupted_weights(tmp_path, gpt2_tokenizer_dir, stories):
    base = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir)
    # 4 records -> 7 blocks of (at most) 32 tokens: 6 steps of 4 examples go around the corpus 3 times.
    data = {**base["data"], "streaming": True, "max_examples": 4}
    train = {"max_steps": 6, "batch_size": 2, "gradient_accumulation_steps": 2, "learning_rate": 1e-3,
             "log_every": 1, "save_every": 2, "progress": False}
    straight = distill(tiny_run_config(tmp_path / "straight", gpt2_tokenizer_dir, data=data, train=train))
    stopped = distill(tiny_run_config(tmp_path / "resumed", gpt2_tokenizer_dir, data=data, train=train), stop_after=3)
    assert stopped.stopped_early and stopped.steps == 3
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())
    assert state["data_position"]["passes"] == 1  # 12 examples read (7 + 5): the checkpoint is in the second pass
    resumed = distill(tiny_run_config(tmp_path / "resumed", gpt2_tokenizer_dir, data=data, train=train), resume=True)
    assert resumed.steps == 6
    expected, actual = load_file(str(straight.student_dir / "model.safetensors")), load_file(str(resumed.student_dir / "model.safetensors"))
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6)

    def logged(run, key):
        return [line[key] for line in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())]
    assert logged("resumed", "loss") == pytest.approx(logged("straight", "loss"), rel=1e-6)
    assert logged("resumed", "tokens") == logged("straight", "tokens")
