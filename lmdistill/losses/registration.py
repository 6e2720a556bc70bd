"""How a loss is registered: the one table of named losses and the decorator that fills it.

The loss modules import this (and nothing else of the package but errors); :mod:`lmdistill.losses.registry` imports
every loss module, so looking a name up there always sees all of them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

LossKind = Literal["logits", "labels", "hidden", "attention", "spans", "tokens"]

# Arguments the caller supplies (tensors and masks); everything else keyword-only is a user parameter.
_CALLER_ARGUMENTS = {"key_mask", "query_mask", "token_map"}


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its function, what it consumes, and its user-settable parameters with defaults."""

    name: str
    fn: Callable[..., Any]
    kind: LossKind
    description: str
    params: dict[str, Any] = field(default_factory=dict)
    # Attention losses that relate a sequence's positions to each other (MiniLM's value relation, MiniLMv2's Q-Q,
    # K-K, V-V): defined on self-attention only, where queries and keys are the same tokens.
    self_attention_only: bool = False


_REGISTRY: dict[str, LossSpec] = {}


def register(name: str, kind: LossKind, *, self_attention_only: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` under ``name``; its keyword-only arguments with defaults become its parameters."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"loss {name!r} registered twice")
        params = {
            p.name: p.default
            for p in inspect.signature(fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _CALLER_ARGUMENTS
        }
        description = (inspect.getdoc(fn) or "").strip().splitlines()[0] if fn.__doc__ else ""
        _REGISTRY[name] = LossSpec(name=name, fn=fn, kind=kind, description=description, params=params,
                                   self_attention_only=self_attention_only)
        return fn

    return decorator
