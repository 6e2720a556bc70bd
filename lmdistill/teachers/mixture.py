"""Several live teachers: logit terms use their weighted mixture in probability space; hidden-state and attention
terms use one of them (``feature_teacher``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from lmdistill.objective import Features, Masks, Needs, forward_features
from lmdistill.teachers.base import refuse_span_terms
from lmdistill.teachers.live import DenseTeacherBatch


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


@dataclass
class MixtureTeacherBatch:
    """The feature teacher's features plus every teacher's (weight, aligned logits)."""

    features: Features
    mixture: list[tuple[float, torch.Tensor]]

    def logit_term(self, name: str, params: dict[str, Any], student: Features, masks: Masks) -> torch.Tensor:
        mixed = mix_teachers(self.mixture, params.get("temperature", 1.0))
        return DenseTeacherBatch(replace(self.features, logits=mixed)).logit_term(name, params, student, masks)

    def target_log_probs(self, targets: torch.Tensor, masks: Masks) -> torch.Tensor:
        mixed = mix_teachers(self.mixture, 1.0)  # the mixture itself, not a tempered one
        return DenseTeacherBatch(replace(self.features, logits=mixed)).target_log_probs(targets, masks)


class MixtureTeacher:
    """Weighted teachers run on every micro-batch; ``feature_index`` names the one whose features are used."""

    student_runs_headless = False

    def __init__(self, weighted: list[tuple[float, torch.nn.Module]], feature_index: int):
        self.weighted = weighted
        self.feature_index = feature_index
        self.model = weighted[feature_index][1]

    def check_terms(self, terms) -> None:
        refuse_span_terms(terms)

    def to(self, device) -> None:
        for _, model in self.weighted:
            model.to(device)

    def batch(self, batch, example_indices, needs: Needs, task) -> MixtureTeacherBatch:
        features = forward_features(self.model, batch, needs, task, grad=False)
        logits_only = Needs(logits=True, hidden_states=False, attentions=False, teacher=True)
        mixture = [(weight, features.logits if model is self.model else
                    forward_features(model, batch, logits_only, task, grad=False).logits)
                   for weight, model in self.weighted]
        return MixtureTeacherBatch(features, mixture)
