"""Keep-or-drop rules for generated rows: completion length in tokens, duplicates, a regex, a user callable."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from lmdistill.data.generate_config import FiltersConfig
from lmdistill.errors import UserError


def import_callable(target: str) -> Callable[[dict[str, Any]], bool]:
    """The function named by ``"module:function"`` (attribute path allowed after the colon)."""
    module_name, _, attribute = target.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise UserError(f"filters.callable {target!r}: cannot import module {module_name!r} ({error}); check the name and PYTHONPATH") from None
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise UserError(f"filters.callable {target!r}: {module_name!r} has no attribute {attribute!r}; check the name")
        value = getattr(value, part)
    if not callable(value):
        raise UserError(f"filters.callable {target!r} is not callable; point it at a function taking a row dict")
    return value


class RowFilter:
    """Applies :class:`FiltersConfig` in a fixed order; remembers kept rows for deduplication.

    ``reason(row)`` returns None to keep the row, else why it is dropped. Token counts are of the completion text
    re-tokenised without special tokens (what training will see, before the EOS the data builder appends).
    """

    def __init__(self, config: FiltersConfig, tokenizer: Any):
        self.config = config
        self.tokenizer = tokenizer
        self.pattern = re.compile(config.regex) if config.regex is not None else None
        self.user_filter = import_callable(config.callable) if config.callable is not None else None
        self.seen: set[tuple[str, str]] = set()

    def remember(self, rows: Iterable[dict[str, Any]]) -> None:
        """Mark rows already in the output as kept (a resumed run deduplicates against them too)."""
        for row in rows:
            self.seen.add((row["prompt"], row["completion"]))

    def reason(self, row: dict[str, Any]) -> str | None:
        config, completion = self.config, row["completion"]
        if config.min_completion_tokens is not None or config.max_completion_tokens is not None:
            length = len(self.tokenizer(completion, add_special_tokens=False)["input_ids"])
            if config.min_completion_tokens is not None and length < config.min_completion_tokens:
                return f"completion has {length} tokens < min_completion_tokens={config.min_completion_tokens}"
            if config.max_completion_tokens is not None and length > config.max_completion_tokens:
                return f"completion has {length} tokens > max_completion_tokens={config.max_completion_tokens}"
        if self.pattern is not None and self.pattern.search(completion) is None:
            return "regex did not match"
        if self.user_filter is not None:
            verdict = self.user_filter(dict(row))
            if not isinstance(verdict, bool):
                raise UserError(f"filters.callable {config.callable!r} returned {type(verdict).__name__}; it must return True or False")
            if not verdict:
                return "callable rejected"
        key = (row["prompt"], completion)
        if config.deduplicate and key in self.seen:
            return "duplicate"
        self.seen.add(key)
        return None
