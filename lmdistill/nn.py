"""``torch.nn.Module`` wrappers of the registered losses, for use inside your own training loop.

``DistillationLoss("forward_kl", temperature=2.0)`` wraps any registered loss; every registered name also has a
CamelCase alias generated from the registry (``ForwardKL``, ``ReverseKL``, ``JSD``, ``HiddenMSE``, ``AttentionKL``,
``MiniLMV2``, ``CE`` ...). A module's forward takes the same tensors as the loss function plus an optional mask and
returns ``lmdistill.losses.reduce(loss(...), mask)``: the masked mean over valid positions. :class:`Objective` is a
weighted sum of named terms.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable

import torch

from lmdistill.errors import UserError
from lmdistill.losses import names, reduce, spec, validate_params
from lmdistill.losses.attention import AttentionCapture

# The tensors each kind of loss takes, as Objective's keyword arguments.
KIND_INPUTS = {
    "logits": ("student_logits", "teacher_logits"),
    "labels": ("student_logits", "labels"),
    "hidden": ("student_hidden", "teacher_hidden"),
    "attention": ("student_attention", "teacher_attention"),
    "spans": ("student_span_log_probs", "teacher_span_log_probs"),
    "tokens": ("student_token_log_probs", "teacher_token_log_probs"),
}
_ACRONYMS = {"kl": "KL", "jsd": "JSD", "mse": "MSE", "mmd": "MMD", "ce": "CE", "tvd": "TVD", "minilm": "MiniLM", "v2": "V2"}


class DistillationLoss(torch.nn.Module):
    """A registered loss as a module: ``DistillationLoss(name, **params)``, params as in the registry.

    forward(*tensors, mask=None, key_mask=None, num_valid=None) -> scalar. ``tensors`` are the loss function's
    positional inputs: (student_logits, teacher_logits) (..., V); (student_logits, labels) (..., V), (...);
    (student_hidden, teacher_hidden) (..., H); or two attentions (AttentionCapture, or raw scores (B, h, Q, K)).
    ``mask`` (...) marks valid positions (attention: valid queries (B, Q)); for label losses it defaults to
    ``labels != ignore_index``. Losses that take a ``key_mask`` (B, K) (attention, hidden_mmd) get ``mask`` as
    their key mask unless one is given (for attention only when Q == K: self-attention).
    ``num_valid`` is the global count of valid positions (see :func:`lmdistill.losses.reduce`).
    """

    loss_name: str | None = None  # set by the generated aliases

    def __init__(self, name: str | None = None, **params: Any):
        super().__init__()
        name = name or self.loss_name
        if name is None:
            raise UserError("DistillationLoss needs a loss name, e.g. DistillationLoss('forward_kl'); see lmdistill.losses.names()")
        if self.loss_name is not None and name != self.loss_name:
            raise UserError(f"{type(self).__name__} is the {self.loss_name!r} loss; use DistillationLoss({name!r}) for another one")
        validate_params(name, params)
        self.name = name
        self.kind = spec(name).kind
        self.takes_key_mask = "key_mask" in inspect.signature(spec(name).fn).parameters
        self.params = {**spec(name).params, **params}

    def per_position(self, *tensors: Any, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The loss function's unreduced output for ``tensors`` (shapes as in the class docstring)."""
        if len(tensors) != 2:
            raise UserError(f"{type(self).__name__} takes 2 tensors ({', '.join(KIND_INPUTS[self.kind])}), got {len(tensors)}")
        fn = spec(self.name).fn
        if self.kind == "attention":
            student, teacher = (t if isinstance(t, AttentionCapture) else AttentionCapture(scores=t) for t in tensors)
            return fn(student, teacher, key_mask=key_mask, **self.params)
        if self.takes_key_mask:
            return fn(*tensors, key_mask=key_mask, **self.params)
        return fn(*tensors, **self.params)

    def forward(
        self, *tensors: Any, mask: torch.Tensor | None = None, key_mask: torch.Tensor | None = None,
        num_valid: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        if self.kind == "labels" and mask is None:
            mask = tensors[1] != self.params["ignore_index"]
        if self.takes_key_mask and key_mask is None and mask is not None and (self.kind != "attention" or _is_self_attention(tensors)):
            key_mask = mask
        return reduce(self.per_position(*tensors, key_mask=key_mask), mask, num_valid=num_valid)

    def extra_repr(self) -> str:
        return ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in self.params.items()])


def _is_self_attention(tensors: tuple[Any, ...]) -> bool:
    first = tensors[0]
    scores = first.scores if isinstance(first, AttentionCapture) else first
    if scores is None:  # a capture with only Q/K/V: queries and keys are the same tokens
        return True
    return scores.shape[-1] == scores.shape[-2]


def class_name(loss_name: str) -> str:
    """The alias class name of a loss: forward_kl -> ForwardKL, jsd -> JSD, minilm_v2 -> MiniLMV2."""
    return "".join(_ACRONYMS.get(part, part.capitalize()) for part in loss_name.split("_"))


def _make_alias(loss_name: str) -> type[DistillationLoss]:
    loss = spec(loss_name)
    params = ", ".join(f"{k}={v!r}" for k, v in loss.params.items()) or "no parameters"
    doc = (
        f"{loss.description}\n\nModule for the registered loss {loss_name!r} ({loss.kind}; {params}). "
        f"forward({', '.join(KIND_INPUTS[loss.kind])}, mask=None) -> reduced scalar; see DistillationLoss."
    )

    def __init__(self, **params: Any) -> None:
        DistillationLoss.__init__(self, loss_name, **params)

    return type(class_name(loss_name), (DistillationLoss,), {"loss_name": loss_name, "__init__": __init__, "__doc__": doc, "__module__": __name__})


_ALIASES: dict[str, type[DistillationLoss]] = {class_name(n): _make_alias(n) for n in names()}
globals().update(_ALIASES)


def __getattr__(attribute: str) -> type[DistillationLoss]:
    # Losses registered after import (user plug-ins) get their alias on first access.
    for loss_name in names():
        if class_name(loss_name) == attribute:
            _ALIASES.setdefault(attribute, _make_alias(loss_name))
            return _ALIASES[attribute]
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


class Objective(torch.nn.Module):
    """Weighted sum of named terms: ``Objective([(name, weight, module), ...])``.

    forward(mask=None, **tensors) -> (total, {name: value}), total = Σ weight · value. Each term's inputs are
    ``tensors[name]`` when given (a tuple of its positional tensors); otherwise a :class:`DistillationLoss` takes
    the keywords of its kind (``student_logits``/``teacher_logits``, ``student_logits``/``labels``,
    ``student_hidden``/``teacher_hidden``, ``student_attention``/``teacher_attention``) and any other module is
    called with all keywords. ``mask`` is passed to every term.
    """

    def __init__(self, terms: Iterable[tuple[str, float, torch.nn.Module]]):
        super().__init__()
        terms = list(terms)
        labels = [name for name, _, _ in terms]
        duplicates = sorted({n for n in labels if labels.count(n) > 1})
        if duplicates:
            raise UserError(f"objective term names must be unique, {', '.join(map(repr, duplicates))} repeats; rename one")
        if not terms:
            raise UserError("an Objective needs at least one (name, weight, module) term")
        self.weights = {name: float(weight) for name, weight, _ in terms}
        self.terms = torch.nn.ModuleDict({name: module for name, _, module in terms})

    def forward(self, mask: torch.Tensor | None = None, **tensors: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values: dict[str, torch.Tensor] = {}
        for name, module in self.terms.items():
            if name in tensors:
                values[name] = module(*tensors[name], mask=mask)
            elif isinstance(module, DistillationLoss):
                missing = [key for key in KIND_INPUTS[module.kind] if key not in tensors]
                if missing:
                    raise UserError(f"objective term {name!r} needs {', '.join(missing)}; pass them to the objective or pass {name}=(...)")
                values[name] = module(*(tensors[key] for key in KIND_INPUTS[module.kind]), mask=mask)
            else:
                values[name] = module(mask=mask, **tensors)
        total = sum(self.weights[name] * value for name, value in values.items())
        return total, values

    def extra_repr(self) -> str:
        return ", ".join(f"{name}: {weight}" for name, weight in self.weights.items())


__all__ = ["DistillationLoss", "Objective", "class_name", *_ALIASES]
