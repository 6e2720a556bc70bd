"""Registry of named losses shared by configs, the CLI and users.

Every loss is a pure function registered under one name with a ``kind`` that tells the caller which tensors it takes:

- ``logits``:    ``fn(student_logits, teacher_logits, *, temperature=1.0, **params)`` on (..., V) -> (...)
- ``labels``:    ``fn(student_logits, labels, **params)`` on (..., V) and (...) -> (...)
- ``hidden``:    ``fn(student_hidden, teacher_hidden, **params)`` on (..., H) -> (...)
- ``attention``: ``fn(student, teacher, *, key_mask=None, **params)`` on :class:`AttentionCapture` -> (B, Q)

Per-position outputs are reduced by :func:`lmdistill.losses.reduce`, the only place that masks and normalises.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from lmdistill.errors import UserError

LossKind = Literal["logits", "labels", "hidden", "attention"]

# Arguments the caller supplies (tensors and masks); everything else keyword-only is a user parameter.
_CALLER_ARGUMENTS = {"key_mask", "query_mask"}


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its function, what it consumes, and its user-settable parameters with defaults."""

    name: str
    fn: Callable[..., Any]
    kind: LossKind
    description: str
    params: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, LossSpec] = {}


def register(name: str, kind: LossKind) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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
        _REGISTRY[name] = LossSpec(name=name, fn=fn, kind=kind, description=description, params=params)
        return fn

    return decorator


def spec(name: str) -> LossSpec:
    """The :class:`LossSpec` for ``name``; an unknown name is a :class:`UserError` listing the valid ones."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise UserError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get(name: str) -> Callable[..., Any]:
    """The loss function registered as ``name``."""
    return spec(name).fn


def names() -> list[str]:
    """All registered loss names, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def validate_params(name: str, params: dict[str, Any]) -> None:
    """Raise a :class:`UserError` naming the valid parameters if ``params`` has one ``name`` does not take."""
    valid = spec(name).params
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UserError(
            f"loss {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(sorted(valid)) or '(none)'}"
        )


def _ensure_loaded() -> None:
    # Importing the modules runs their @register decorators.
    from lmdistill.losses import attention, hidden, logits, relations  # noqa: F401
