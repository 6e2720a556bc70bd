"""What one model produced for a batch (logits or last hidden state + head, hidden states, attention) and the masks."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from lmdistill.losses.attention import AttentionCapture
from lmdistill.losses.fused_ce import row_logits
from lmdistill.models import capture as attention_capture
from lmdistill.models.heads import model_inputs, output_head
from lmdistill.objective.terms import Needs


@dataclass
class Features:
    """What one model produced for a batch. Any field may be None when no term needs it.

    logits: aligned with the task's targets, e.g. (B, S-1, V) for causal LMs. hidden_states: per layer stack (the
    task's ``feature_stacks``), a tuple of L+1 tensors (B, S, H), index 0 = embeddings, k = output of block k.
    attentions: per layer stack, one :class:`AttentionCapture` per block. Large vocabularies: no logits;
    ``last_hidden`` (aligned like logits) and the output head instead.
    """

    logits: torch.Tensor | None = None
    hidden_states: dict[str, tuple[torch.Tensor, ...]] | None = None
    attentions: dict[str, list[AttentionCapture]] | None = None
    last_hidden: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None
    logit_softcap: float | None = None
    loss_rows: torch.Tensor | None = field(default=None, repr=False)  # see loss_row_logits

    def loss_row_logits(self, masks: Masks) -> torch.Tensor:
        """float32 (N, V) logits at the N loss positions, from ``last_hidden`` and the head (no logits held); computed
        once per batch and shared by every term that reads them (a sparse teacher's KL and the CE beside it)."""
        if self.loss_rows is None:
            rows = masks.loss.to(torch.bool)
            self.loss_rows = row_logits(self.last_hidden[rows], self.head_weight, self.head_bias, self.logit_softcap)
        return self.loss_rows


@dataclass
class Masks:
    """Valid positions and their global counts (over all accumulation steps and processes).

    loss: positions of the aligned logits that are in the loss ((B, S-1) for causal LMs, (B,) for classification,
    (B, T) decoder positions for seq2seq); tokens: (B, S) real (non-padding) input tokens. Feature terms use the one
    their layer stack names (:meth:`of`).
    """

    loss: torch.Tensor
    tokens: torch.Tensor
    loss_count: torch.Tensor | float
    token_count: torch.Tensor | float

    def of(self, positions: str) -> tuple[torch.Tensor, torch.Tensor | float]:
        """(bool mask, global count) of the position set ``positions``: "tokens" or "loss"."""
        if positions == "tokens":
            return self.tokens.to(torch.bool), self.token_count
        if positions == "loss":
            return self.loss.to(torch.bool), self.loss_count
        raise AssertionError(f"unknown position set {positions!r}")


def forward_features(run, batch, needs: Needs, task, *, grad: bool, head_model=None) -> Features:
    """Features on ``batch`` from ``run(**inputs)`` (a model, or a callable running one); aligned with the targets.

    With ``head_model`` (the fused path), ``run`` must return the base model's output (no lm_head) and the features
    hold its last hidden state plus ``head_model``'s output head instead of logits."""
    inputs = model_inputs(batch)
    context = torch.enable_grad() if grad else torch.no_grad()
    with context, (attention_capture.capture() if needs.attentions else contextlib.nullcontext()) as records:
        output = run(**inputs, output_hidden_states=needs.hidden_states)
    features = Features(
        hidden_states=task.stack_hidden_states(output) if needs.hidden_states else None,
        attentions=task.stack_attentions(records) if needs.attentions else None,
    )
    if head_model is not None:
        weight, bias, softcap = output_head(head_model)
        features.last_hidden = task.align_positions(output.last_hidden_state)
        features.head_weight, features.head_bias, features.logit_softcap = weight, bias, softcap
    else:
        features.logits = task.output_logits(output, batch)
    return features
