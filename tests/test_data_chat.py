"""Chat examples: labels on assistant turns only, with a simple template on GPT-2 and the real Qwen2 template."""

from __future__ import annotations

import copy

import pytest

from lmdistill.config import DataConfig
from lmdistill.data import build_causal_examples, build_causal_examples_with_stats
from lmdistill.errors import UserError

from conftest import require_shared_data

IGNORE = -100
# every piece ends in "\n", a GPT-2 pre-token boundary, so tokenising the pieces separately equals tokenising the whole
SIMPLE_TEMPLATE = (
    "{% for message in messages %}{{ '### ' + message['role'] + ':\n' }}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] + eos_token + '\n' }}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### assistant:\n' }}{% endif %}"
)
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue, like the sea."},
]


@pytest.fixture()
def chat_gpt2(gpt2_tokenizer):
    tokenizer = copy.deepcopy(gpt2_tokenizer)
    tokenizer.chat_template = SIMPLE_TEMPLATE
    tokenizer.pad_token = tokenizer.eos_token  # the pad == eos trap: the assistant's EOS must stay in the loss
    return tokenizer


def expected_from_pieces(tokenizer, pieces):
    """(input_ids, labels) from (text, in_loss) pieces, each tokenised on its own."""
    input_ids, labels = [], []
    for text, in_loss in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += piece
        labels += piece if in_loss else [IGNORE] * len(piece)
    return input_ids, labels


def test_assistant_only_labels_simple_template(chat_gpt2):
    eos = chat_gpt2.eos_token
    pieces = [
        ("### system:\nBe brief.\n### user:\nHi!\n### assistant:\n", False),
        (f"Hello.{eos}\n", True),
        ("### user:\nName a colour.\n### assistant:\n", False),
        (f"Blue, like the sea.{eos}\n", True),
    ]
    expected_ids, expected_labels = expected_from_pieces(chat_gpt2, pieces)
    whole = "".join(text for text, _ in pieces)
    assert chat_gpt2(whole, add_special_tokens=False)["input_ids"] == expected_ids  # premise of the construction
    data = DataConfig(train="x", format="chat", max_length=256)
    [example] = build_causal_examples([{"messages": CONVERSATION}], chat_gpt2, data)
    assert example == {"input_ids": expected_ids, "labels": expected_labels}
    assert expected_labels.count(chat_gpt2.eos_token_id) == 2


def test_truncation_keeps_or_drops_by_surviving_assistant_tokens(chat_gpt2):
    prompt_ids, _ = expected_from_pieces(chat_gpt2, [("### system:\nBe brief.\n### user:\nHi!\n### assistant:\n", False)])
    data = DataConfig(train="x", format="chat", max_length=len(prompt_ids) + 1, messages_field="conv")
    records = [{"conv": CONVERSATION}, {"conv": CONVERSATION[:2]}]  # the second has no assistant turn at all
    examples, stats = build_causal_examples_with_stats(records, chat_gpt2, data)
    first_reply = chat_gpt2("Hello.", add_special_tokens=False)["input_ids"][0]
    assert examples == [{"input_ids": prompt_ids + [first_reply], "labels": [IGNORE] * len(prompt_ids) + [first_reply]}]
    assert (stats.examples, stats.truncated, stats.dropped) == (1, 1, 1)

    data = DataConfig(train="x", format="chat", max_length=len(prompt_ids))
    assert build_causal_examples([{"messages": CONVERSATION}], chat_gpt2, data) == []


def test_tokenizer_without_chat_template(gpt2_tokenizer):
    assert not gpt2_tokenizer.chat_template
    with pytest.raises(UserError, match=r"data\.format=chat needs a tokenizer with a chat template"):
        build_causal_examples([{"messages": CONVERSATION}], gpt2_tokenizer, DataConfig(train="x", format="chat"))


def test_template_that_is_not_prefix_stable(chat_gpt2):
    chat_gpt2.chat_template = "{{ messages | length }}" + SIMPLE_TEMPLATE
    with pytest.raises(UserError, match=r"record 0: the chat template renders earlier turns differently"):
        build_causal_examples([{"messages": CONVERSATION}], chat_gpt2, DataConfig(train="x", format="chat"))


def test_messages_must_be_a_list_of_role_dicts(chat_gpt2):
    with pytest.raises(UserError, match=r"record 0: field 'messages' must be a list of"):
        build_causal_examples([{"messages": [{"content": "no role"}]}], chat_gpt2, DataConfig(train="x", format="chat"))
    with pytest.raises(UserError, match=r"record 0: field 'messages' holds str, expected list"):
        build_causal_examples([{"messages": "hello"}], chat_gpt2, DataConfig(train="x", format="chat"))


@pytest.fixture(scope="module")
def qwen2_tokenizer():
    """The real Qwen2 tokenizer and ChatML template (~10 s from GGUF, so loaded once)."""
    from transformers import AutoTokenizer

    folder = require_shared_data("tokenizers", "ggml-vocab-qwen2.gguf").parent
    return AutoTokenizer.from_pretrained(str(folder), gguf_file="ggml-vocab-qwen2.gguf")


@pytest.mark.slow
def test_assistant_only_labels_qwen2_chatml(qwen2_tokenizer):
    assert qwen2_tokenizer.pad_token_id == qwen2_tokenizer.eos_token_id  # Qwen2 ships with pad == eos
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello<|endoftext|>"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "See you."},
    ]
    pieces = [
        ("<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
         "<|im_start|>assistant\n", False),
        ("Hello<|endoftext|><|im_end|>\n", True),
        ("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n", False),
        ("See you.<|im_end|>\n", True),
    ]
    expected_ids, expected_labels = expected_from_pieces(qwen2_tokenizer, pieces)
    [example] = build_causal_examples([{"messages": messages}], qwen2_tokenizer, DataConfig(train="x", format="chat"))
    assert example == {"input_ids": expected_ids, "labels": expected_labels}
    assert qwen2_tokenizer.eos_token_id in example["labels"]
