"""Tokenise chat conversations with the tokenizer's chat template, loss on the assistant turns only.

How the assistant spans are found (incremental rendering + offsets): the whole conversation is rendered once with
``apply_chat_template(messages, tokenize=False)``. For assistant message ``i``, the span starts where the rendering of
``messages[:i]`` with ``add_generation_prompt=True`` ends (after the assistant header) and stops where the rendering
of ``messages[:i + 1]`` ends (so the template's end-of-turn marker, e.g. ``<|im_end|>``, is learned too: the model
must learn to stop). Both prefix renderings must be prefixes of the full rendering; templates that rewrite earlier
turns (e.g. strip reasoning) fail that check with a UserError. The rendered text is tokenised once with character
offsets; a token is in the loss when its first character lies in an assistant span. Labels never come from token
values, so an EOS or pad-equal token inside an assistant turn stays in the loss.
"""

from __future__ import annotations

from typing import Any

from lmdistill.errors import UserError
from lmdistill.losses import IGNORE_INDEX



def check_chat_tokenizer(tokenizer: Any) -> None:
    """Raise UserError unless the tokenizer has a chat template and gives character offsets."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "data.format=chat needs a tokenizer with a chat template, and this one has none; "
            "use the instruct model's tokenizer (set `tokenizer:`) or convert the data to prompt_completion"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise UserError("data.format=chat needs a fast (Rust) tokenizer for character offsets; load it with use_fast=True")


def assistant_char_spans(messages: list[dict[str, Any]], tokenizer: Any, where: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character spans of its assistant turns."""
    full = _render(tokenizer, messages, False, where)
    spans = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        start_text = _render(tokenizer, messages[:index], True, where) if index else ""
        if not full.startswith(start_text):
            # e.g. a template that adds its default system prompt only when there is a first message
            start_text = _render(tokenizer, messages[:index], False, where) if index else ""
        end_text = _render(tokenizer, messages[: index + 1], False, where)
        if not (full.startswith(start_text) and full.startswith(end_text)):
            raise UserError(
                f"{where}: the chat template renders earlier turns differently once later turns follow, so assistant "
                "turns cannot be located; use a template whose rendering of a prefix is a prefix of the whole"
            )
        spans.append((len(start_text), len(end_text)))
    return full, spans


def _render(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool, where: str) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as error:  # jinja errors on the user's data or template
        raise UserError(f"{where}: the chat template failed on this conversation ({error}); check its messages") from None


def validate_messages(messages: Any, where: str, field: str) -> list[dict[str, Any]]:
    """The conversation as a list of {role, content} dicts, or a UserError saying what is wrong."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise UserError(
            f"{where}: field {field!r} must be a list of {{'role': ..., 'content': ...}} messages; "
            f"got {type(messages).__name__}; fix the data or data.messages_field"
        )
    return messages


def tokenize_chats(conversations: list[list[dict[str, Any]]], tokenizer: Any, where: list[str]) -> list[dict[str, list[int]]]:
    """Untruncated {"input_ids", "labels"} per conversation; labels = ids on assistant spans, -100 elsewhere."""
    check_chat_tokenizer(tokenizer)
    rendered = [assistant_char_spans(messages, tokenizer, w) for messages, w in zip(conversations, where)]
    encoded = tokenizer([text for text, _ in rendered], add_special_tokens=False, return_offsets_mapping=True)
    examples = []
    for (_, spans), ids, offsets in zip(rendered, encoded["input_ids"], encoded["offset_mapping"]):
        labels = [
            token if any(start <= char_start < end for start, end in spans) else IGNORE_INDEX
            for token, (char_start, _) in zip(ids, offsets)
        ]
        examples.append({"input_ids": list(ids), "labels": labels})
    return examples
