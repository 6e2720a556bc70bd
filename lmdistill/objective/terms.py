"""Resolved objective terms: the loss, its weight schedule, its parameters and (feature terms) its layer pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmdistill.config import ScheduledFloat, TermConfig, value_at
from lmdistill.errors import UserError
from lmdistill.losses import spec
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
    batches: str = "all"  # which batches: "all", "samples" (the student's own, on-policy) or "data" (the others)

    def weight_at(self, progress: float) -> float:
        return value_at(self.weight, progress)

    def applies_to(self, student_samples: bool) -> bool:
        """Whether the term is part of the objective on a batch of student samples (True) or of data (False)."""
        return self.batches == "all" or (self.batches == "samples") == student_samples

    def params_at(self, progress: float) -> dict[str, Any]:
        return {k: value_at(v, progress) if k == "temperature" else v for k, v in self.params.items()}


@dataclass(frozen=True)
class Needs:
    """Which features the objective needs from the models."""

    logits: bool
    hidden_states: bool
    attentions: bool
    teacher: bool  # False when only hard-label terms remain (no teacher at all)


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
        terms.append(Term(label=label, name=config.name, kind=loss.kind, weight=config.weight, params=config.params,
                          layer_pairs=pairs, batches=config.batches))
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
        logits=bool(kinds & {"logits", "labels", "spans", "tokens"}),
        hidden_states="hidden" in kinds,
        attentions="attention" in kinds,
        teacher=bool(kinds - {"labels"}),
    )


def projection_widths(terms: list[Term], student_width: int, teacher_width: int) -> dict[str, tuple[int, int]]:
    """Hidden terms that need a learned projection (student width != teacher width): label -> (in, out)."""
    if student_width == teacher_width:
        return {}
    return {term.label: (student_width, teacher_width) for term in terms if term.kind == "hidden"}
