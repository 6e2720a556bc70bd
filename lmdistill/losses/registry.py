"""Registry of named losses shared by configs, the CLI and users.

Every loss is a pure function registered under one name with a ``kind`` that tells the caller which tensors it takes:

- ``logits``:    ``fn(student_logits, teacher_logits, *, temperature=1.0, **params)`` on (..., V) -> (...)
- ``labels``:    ``fn(student_logits, labels, **params)`` on (..., V) and (...) -> (...)
- ``hidden``:    ``fn(student_hidden, teacher_hidden, **params)`` on (..., H) -> (...)
- ``attention``: ``fn(student, teacher, *, key_mask=None, **params)`` on :class:`AttentionCapture` -> (B, Q)
- ``spans``:     ``fn(student_span_log_probs, teacher_span_log_probs, **params)`` on (...) -> (...): summed
  log-probabilities of text spans aligned across two tokenizers (a cross-tokenizer teacher feeds them)
- ``tokens``:    ``fn(student_token_log_probs, teacher_token_log_probs, **params)`` on (...) -> (...): each
  model's log-probability of the target token (the student's own sample on on-policy batches)

Per-position outputs are reduced by :func:`lmdistill.losses.reduce`, the only place that masks and normalises.
"""

from __future__ import annotations

from typing import Any, Callable

from lmdistill.errors import UserError
# Importing the loss modules runs their @register decorators: every name is known once this module is loaded.
from lmdistill.losses import attention, cross_vocab, hidden, logits, relations, sampled  # noqa: F401
from lmdistill.losses.registration import _REGISTRY, LossKind, LossSpec, register

__all__ = ["LossKind", "LossSpec", "get", "names", "register", "spec", "validate_params", "_REGISTRY"]

def spec(name: str) -> LossSpec:
    """The :class:`LossSpec` for ``name``; an unknown name is a :class:`UserError` listing the valid ones."""
    if name not in _REGISTRY:
        raise UserError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get(name: str) -> Callable[..., Any]:
    """The loss function registered as ``name``."""
    return spec(name).fn


def names() -> list[str]:
    """All registered loss names, sorted."""
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
