"""The objective: a weighted sum of named loss terms, dispatched by the kind of tensors each loss takes.

The trainer never knows a loss by its name: each :class:`Term` says which inputs it needs (logits, labels, hidden
states, attention) and is fed from :class:`Features` of the student and the teacher. Masks and normalisation go
through :func:`lmdistill.losses.reduce` with global valid-position counts, so accumulation and data parallelism give
the same loss as one big batch.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from lmdistill.config import ScheduledFloat, TermConfig, value_at
from lmdistill.errors import UserError
from lmdistill.losses import reduce, spec
from lmdistill.losses.attention import AttentionCapture
from lmdistill.losses.layer_map import last_layer_map, uniform_layer_map


@dataclass
class Term:
    """One resolved term: the loss, its weight schedule, its parameters, and (features) its layer pairs."""

    label: str  # unique display name, e.g. "forward_kl" or "hidden_mse#2"
    name: str
    kind: str
    weight: ScheduledFloat
    params: dict[str, Any]
    layer_pairs: list[tuple[int, int]] = field(default_factory=list)  # (student, teacher) 0-based block indices

    def weight_at(self, progress: float) -> float:
        return value_at(self.weight, progress)

    def params_at(self, progress: float) -> dict[str, Any]:
        return {k: value_at(v, progress) if k == "temperature" else v for k, v in self.params.items()}


@dataclass
class Features:
    """What one model produced for a batch. Any field may be None when no term needs it.

    logits: (B, S, V). hidden_states: tuple of L+1 tensors (B, S, H), index 0 = embeddings, k = output of block k.
    attentions: one :class:`AttentionCapture` per block, in order.
    """

    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: list[AttentionCapture] | None = None
    # Large vocabularies: no logits; the last hidden state (aligned like logits) and the output head instead.
    last_hidden: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None
    logit_softcap: float | None = None
    # Several teachers: (weight, aligned logits) of each; logit terms use their mixture in probability space.
    mixture: list[tuple[float, torch.Tensor]] | None = None


@dataclass(frozen=True)
class Needs:
    """Which features the objective needs from the models."""

    logits: bool
    hidden_states: bool
    attentions: bool
    teacher: bool  # False when only hard-label terms remain (no teacher forward at all)


def build_terms(configs: list[TermConfig], *, student_layers: int, teacher_layers: int) -> list[Term]:
    """Resolve term configs against the models' depths (layer maps checked against both)."""
    terms: list[Term] = []
    seen: dict[str, int] = {}
    for config in configs:
        loss = spec(config.name)
        seen[config.name] = seen.get(config.name, 0) + 1
        label = config.name if seen[config.name] == 1 else f"{config.name}#{seen[config.name]}"
        pairs: list[tuple[int, int]] = []
        if loss.kind in ("hidden", "attention"):
            pairs = _layer_pairs(config, student_layers, teacher_layers)
        terms.append(Term(label=label, name=config.name, kind=loss.kind, weight=config.weight, params=config.params, layer_pairs=pairs))
    return terms


def _layer_pairs(config: TermConfig, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    if config.layers == "uniform":
        return uniform_layer_map(student_layers, teacher_layers)
    if config.layers == "last":
        return last_layer_map(student_layers, teacher_layers)
    pairs = [(int(s), int(t)) for s, t in config.layers]
    # Hidden-state terms may name -1 for the embedding output; attention terms may not.
    low = -1 if spec(config.name).kind == "hidden" else 0
    for s, t in pairs:
        if not (low <= s < student_layers and low <= t < teacher_layers):
            raise UserError(
                f"{config.name}: layer pair [{s}, {t}] out of range; the student has layers {low}..{student_layers - 1} "
                f"and the teacher {low}..{teacher_layers - 1}"
            )
    return pairs


def needs_of(terms: list[Term]) -> Needs:
    kinds = {term.kind for term in terms}
    return Needs(
        logits=bool(kinds & {"logits", "labels"}),
        hidden_states="hidden" in kinds,
        attentions="attention" in kinds,
        teacher=bool(kinds - {"labels"}),
    )


@dataclass
class Masks:
    """Valid positions and their global counts (over all accumulation steps and processes).

    loss: positions of the aligned logits that are in the loss ((B, S-1) for causal LMs, (B,) for classification);
    tokens: (B, S) real (non-padding) tokens, for hidden-state and attention terms.
    """

    loss: torch.Tensor
    tokens: torch.Tensor
    loss_count: torch.Tensor | float
    token_count: torch.Tensor | float


def compute_terms(
    terms: list[Term],
    student: Features,
    teacher: Features,
    targets: torch.Tensor,
    masks: Masks,
    projections: torch.nn.ModuleDict | None,
    progress: float,
) -> dict[str, torch.Tensor]:
    """Each term's reduced value (unweighted), keyed by label.

    Logits are already aligned with ``targets`` (the task did any causal shift); ``masks.loss`` marks the valid ones.
    """
    values: dict[str, torch.Tensor] = {}
    for term in terms:
        params = term.params_at(progress)
        fn = spec(term.name).fn
        if term.kind in ("labels", "logits") and student.logits is None:
            values[term.label] = _fused_term(term, params, student, teacher, targets, masks)
        elif term.kind == "labels":
            per_position = fn(student.logits, targets, **params)
            values[term.label] = reduce(per_position, masks.loss, num_valid=masks.loss_count)
        elif term.kind == "logits":
            reference = teacher.logits if teacher.mixture is None else mix_teachers(teacher.mixture, params.get("temperature", 1.0))
            student_logits, teacher_logits = shared_vocab(student.logits, reference)
            per_position = fn(student_logits, teacher_logits, **params)
            values[term.label] = reduce(per_position, masks.loss, num_valid=masks.loss_count)
        elif term.kind == "hidden":
            values[term.label] = _hidden_term(term, fn, params, student, teacher, masks, projections)
        elif term.kind == "attention":
            values[term.label] = _attention_term(term, fn, params, student, teacher, masks)
        else:  # pragma: no cover - the registry only knows these kinds
            raise AssertionError(term.kind)
    return values


def _fused_term(term, params, student: Features, teacher: Features, targets, masks: Masks) -> torch.Tensor:
    """A logit term from hidden states and output heads, never materialising (tokens x vocab) logits."""
    from lmdistill.losses.fused import fused_linear_divergence
    from lmdistill.losses.fused_ce import chunked_linear_cross_entropy

    if term.kind == "labels":
        return chunked_linear_cross_entropy(student.last_hidden, student.head_weight, targets, bias=student.head_bias,
                                            mask=masks.loss, num_valid=masks.loss_count, logit_softcap=student.logit_softcap,
                                            **params)
    size = min(student.head_weight.shape[0], teacher.head_weight.shape[0])
    return fused_linear_divergence(
        student.last_hidden, student.head_weight[:size], teacher.last_hidden, teacher.head_weight[:size],
        student_bias=None if student.head_bias is None else student.head_bias[:size],
        teacher_bias=None if teacher.head_bias is None else teacher.head_bias[:size],
        divergence=term.name, mask=masks.loss, num_valid=masks.loss_count, logit_softcap=student.logit_softcap, **params,
    )


def mix_teachers(mixture: list[tuple[float, torch.Tensor]], temperature: float) -> torch.Tensor:
    """Logits z whose softmax(z / T) is the weighted mean of the teachers' softmax(z_k / T) (weights normalised).

    z = T · logsumexp_k(log w_k + log_softmax(z_k / T)); shapes (..., V) each, cut to the shared vocabulary.
    Identical teachers give logits that differ from each one's by a per-row constant, so every softmax-based loss
    is unchanged.
    """
    size = min(logits.shape[-1] for _, logits in mixture)
    total = sum(weight for weight, _ in mixture)
    dtype = torch.float64 if mixture[0][1].dtype == torch.float64 else torch.float32
    stacked = torch.stack([
        torch.log_softmax(logits[..., :size].to(dtype) / temperature, dim=-1) + math.log(weight / total)
        for weight, logits in mixture
    ])
    return temperature * torch.logsumexp(stacked, dim=0)


def shared_vocab(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut both to the shared vocabulary (sizes that differ only by padding rows, e.g. 151,936 vs 152,064)."""
    size = min(student_logits.shape[-1], teacher_logits.shape[-1])
    return student_logits[..., :size], teacher_logits[..., :size]


def _hidden_term(term, fn, params, student: Features, teacher: Features, masks: Masks, projections) -> torch.Tensor:
    per_pair = []
    for s, t in term.layer_pairs:
        student_hidden = student.hidden_states[s + 1]
        teacher_hidden = teacher.hidden_states[t + 1]
        if projections is not None and term.label in projections:
            student_hidden = projections[term.label](student_hidden)
        # Relation losses over positions (hidden_mmd) take the padding mask; per-position ones do not.
        extra = {"key_mask": masks.tokens.to(torch.bool)} if "key_mask" in inspect.signature(fn).parameters else {}
        per_pair.append(reduce(fn(student_hidden, teacher_hidden, **params, **extra), masks.tokens, num_valid=masks.token_count))
    return torch.stack(per_pair).mean()  # (1/N)·Σ over layer pairs


def _attention_term(term, fn, params, student: Features, teacher: Features, masks: Masks) -> torch.Tensor:
    key_mask = masks.tokens.to(torch.bool)
    per_pair = [
        reduce(fn(student.attentions[s], teacher.attentions[t], key_mask=key_mask, **params), masks.tokens, num_valid=masks.token_count)
        for s, t in term.layer_pairs
    ]
    return torch.stack(per_pair).mean()


def total_loss(terms: list[Term], values: dict[str, torch.Tensor], progress: float) -> torch.Tensor:
    """Σ weight(progress) · value over the terms."""
    return sum(term.weight_at(progress) * values[term.label] for term in terms)


def projection_widths(terms: list[Term], student_width: int, teacher_width: int) -> dict[str, tuple[int, int]]:
    """Hidden terms that need a learned projection (student width != teacher width): label -> (in, out)."""
    if student_width == teacher_width:
        return {}
    return {term.label: (student_width, teacher_width) for term in terms if term.kind == "hidden"}
