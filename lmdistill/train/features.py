"""Run a model and keep what the objective needs: logits, or (large vocabularies) the last hidden state + lm_head.

With a large vocabulary the engine never materialises (tokens x vocab) logits: models run without their lm_head and
logit terms go through :func:`lmdistill.losses.fused.fused_linear_divergence` on the last hidden state.
"""

from __future__ import annotations

import contextlib

import torch

from lmdistill.models import capture as attention_capture
from lmdistill.train.objective import Features, Needs

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def output_head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """The lm_head weight (V, H), its bias, and the final-logit softcap of a causal LM (Gemma-style), if any."""
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    return head.weight, getattr(head, "bias", None), softcap


def vocab_size(model: torch.nn.Module) -> int:
    head = model.get_output_embeddings()
    return head.weight.shape[0] if head is not None else model.config.vocab_size


def forward_features(run, batch, needs: Needs, task, *, grad: bool, head_model=None) -> Features:
    """Features on ``batch`` from ``run(**inputs)`` (a model, or a callable running one); aligned with the targets.

    With ``head_model`` (the fused path), ``run`` must return the base model's output (no lm_head) and the features
    hold its last hidden state plus ``head_model``'s output head instead of logits."""
    inputs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
    context = torch.enable_grad() if grad else torch.no_grad()
    with context, (attention_capture.capture() if needs.attentions else contextlib.nullcontext()) as records:
        output = run(**inputs, output_hidden_states=needs.hidden_states)
    features = Features(
        hidden_states=output.hidden_states if needs.hidden_states else None,
        attentions=list(records) if needs.attentions else None,
    )
    if head_model is not None:
        weight, bias, softcap = output_head(head_model)
        features.last_hidden = task.align_logits(output.last_hidden_state)
        features.head_weight, features.head_bias, features.logit_softcap = weight, bias, softcap
    else:
        features.logits = task.align_logits(output.logits)
    return features


def base_model_of(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM's decoder without its lm_head (through a peft wrapper: LoRA layers live inside it)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, model.base_model_prefix)


def run_without_head(model: torch.nn.Module, **inputs):
    """The causal LM's base model (everything but the lm_head): returns last_hidden_state (and hidden_states)."""
    return base_model_of(model)(**inputs)
