"""Resolved objective terms: the loss, its weight schedule, its parameters and (feature terms) its layer stack and
layer pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from lmdistill.config import ScheduledFloat, TermConfig, value_at
from lmdistill.errors import UserError
from lmdistill.losses import spec
from lmdistill.losses.layer_map import last_layer_map, uniform_layer_map
from lmdistill.models.stacks import FEATURE_KINDS, ONE_STACK, ONE_STACK_FEATURES, FeatureStack, resolve_stack


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
    stack: str | None = None  # feature terms: the layer stack read (a name of the task's feature_stacks)
    positions: str = "tokens"  # feature terms: the Masks field over the stack's positions (attention: queries)
    keys: str = "tokens"  # attention terms: the Masks field over the stack's attention keys

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


def build_terms(configs: list[TermConfig], *, student_layers: int | Mapping[str, int],
                teacher_layers: int | Mapping[str, int],
                stacks: Mapping[str, FeatureStack] = ONE_STACK_FEATURES) -> list[Term]:
    """Resolve term configs against the models' depths.

    A feature term reads one of ``stacks`` (the task's ``feature_stacks``): its ``stack``, else the first that feeds
    its kind; its layer map is checked against that stack's depth in both models. Depths are given per stack name
    (``Task.stack_depths``), or as one int for a model with one stack.
    """
    terms: list[Term] = []
    seen: dict[str, int] = {}
    for config in configs:
        loss = spec(config.name)
        seen[config.name] = seen.get(config.name, 0) + 1
        label = config.name if seen[config.name] == 1 else f"{config.name}#{seen[config.name]}"
        term = Term(label=label, name=config.name, kind=loss.kind, weight=config.weight, params=config.params,
                    batches=config.batches)
        if loss.kind in FEATURE_KINDS:
            term.stack = resolve_stack(stacks, loss.kind, config.stack, term=config.name)
            term.positions, term.keys = stacks[term.stack].positions, stacks[term.stack].keys
            term.layer_pairs = _layer_pairs(config, _depth(student_layers, term.stack), _depth(teacher_layers, term.stack),
                                            None if term.stack == ONE_STACK else term.stack)
        terms.append(term)
    return terms


def _depth(layers: int | Mapping[str, int], stack: str) -> int:
    return layers if isinstance(layers, int) else layers[stack]


def _layer_pairs(config: TermConfig, student_layers: int, teacher_layers: int, stack: str | None) -> list[tuple[int, int]]:
    """``stack``: the stack's name for the messages, None for a model's one stack."""
    student, teacher = ("the student", "the teacher") if stack is None else (f"the student's {stack}", f"the teacher's {stack}")
    if config.layers == "uniform" and student_layers > teacher_layers:
        raise UserError(f"{config.name}: {student} has {student_layers} layers, more than {teacher} ({teacher_layers}); "
                        "give an explicit layer map (layers: [[student_layer, teacher_layer], ...])")
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
                f"{config.name}: layer pair [{s}, {t}] out of range; {student} has layers {low}..{student_layers - 1} "
                f"and {teacher} {low}..{teacher_layers - 1}"
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
