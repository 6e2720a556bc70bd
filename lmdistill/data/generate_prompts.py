"""Turn prompt records into generation prompts: text as the output row shows it, token ids the teacher sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmdistill.data.chat import validate_messages
from lmdistill.data.generate_config import PromptsConfig
from lmdistill.errors import UserError

# Keys every output row has; `prompts.keep_fields` may not overwrite them.
ROW_KEYS = ("prompt", "completion", "messages", "prompt_index", "sample_index", "teacher", "sampling", "finish_reason")


@dataclass(frozen=True)
class Prompt:
    """One prompt: ``text`` (rendered; what the row's "prompt" holds), ``token_ids``, the conversation for chat rows."""

    text: str
    token_ids: list[int]
    messages: list[dict[str, Any]] | None = None
    kept: dict[str, Any] = field(default_factory=dict)


def build_prompts(records: list[dict[str, Any]], tokenizer: Any, config: PromptsConfig) -> list[Prompt]:
    """One :class:`Prompt` per record, in record order (the record's position is its ``prompt_index``).

    Plain prompts are tokenised with the tokenizer's special tokens (as ``format: prompt_completion`` training does);
    chat-rendered prompts without them, because the template writes its own.
    """
    for key in config.keep_fields:
        if key in ROW_KEYS:
            raise UserError(f"prompts.keep_fields: {key!r} is a key every output row sets itself; keep another field")
    chat = config.format == "chat" or config.use_chat_template
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "prompts need a chat template (format: chat or use_chat_template: true) but the tokenizer has none; "
            "set `tokenizer:` to the instruct model's tokenizer or use format: prompt without use_chat_template"
        )
    prompts = []
    for index, record in enumerate(records):
        where = f"prompt record {index}"
        kept = {key: _field(record, key, where, "keep_fields") for key in config.keep_fields}
        if config.format == "chat":
            messages = validate_messages(_field(record, config.messages_field, where, "messages_field"), where, config.messages_field)
            if messages and messages[-1].get("role") == "assistant":
                messages = messages[:-1]  # the reference answer; the teacher writes its own
            if not messages:
                raise UserError(f"{where}: the conversation has no turn before the assistant reply; drop the record")
        else:
            messages = [{"role": "user", "content": _plain_text(record, config, where)}]
        if chat:
            text = _render(tokenizer, messages, where)
            token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            text = messages[0]["content"]
            token_ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            messages = None
        if not token_ids:
            raise UserError(f"{where}: the prompt is empty after tokenisation; drop the record or fix prompts.template")
        prompts.append(Prompt(text, list(token_ids), messages, kept))
    return prompts


def _field(record: dict[str, Any], key: str, where: str, setting: str) -> Any:
    if key not in record:
        raise UserError(f"{where} has no field {key!r}; set prompts.{setting} to one of its keys: {', '.join(map(repr, record))}")
    return record[key]


def _plain_text(record: dict[str, Any], config: PromptsConfig, where: str) -> str:
    if config.template is None:
        value = _field(record, config.prompt_field, where, "prompt_field")
        if not isinstance(value, str):
            raise UserError(f"{where}: field {config.prompt_field!r} holds {type(value).__name__}, not text; fix prompts.prompt_field")
        return value
    try:
        return config.template.format_map(record)
    except KeyError as error:
        raise UserError(f"{where}: prompts.template names field {error.args[0]!r}, which the record lacks; use one of {', '.join(map(repr, record))}") from None
    except (ValueError, IndexError) as error:
        raise UserError(f"prompts.template is not a valid format string ({error}); write fields as {{name}} and braces as {{{{ }}}}") from None


def _render(tokenizer: Any, messages: list[dict[str, Any]], where: str) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # jinja errors on the user's data or template
        raise UserError(f"{where}: the chat template failed on this conversation ({error}); check its messages") from None
