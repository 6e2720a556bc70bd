"""Output heads: the lm_head of a causal LM and running the model without it (large vocabularies).

With a large vocabulary the engine never materialises (tokens x vocab) logits: models run without their lm_head and
logit terms are computed chunk by chunk from the last hidden state and the head's weight.
"""

from __future__ import annotations

import torch

# The batch keys a model is called with; the rest of a batch (labels, masks, positions) is for the losses.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The part of ``batch`` that a model's forward takes."""
    return {key: batch[key] for key in MODEL_INPUTS if key in batch}


def output_head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """The lm_head weight (V, H), its bias, and the final-logit softcap of a causal LM (Gemma-style), if any."""
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    return head.weight, getattr(head, "bias", None), softcap


def vocab_size(model: torch.nn.Module) -> int:
    """Rows of the output head (may exceed the tokenizer's size by padding rows)."""
    head = model.get_output_embeddings()
    return head.weight.shape[0] if head is not None else model.config.vocab_size


def base_model_of(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM's decoder without its lm_head (through a peft wrapper: LoRA layers live inside it)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return getattr(model, model.base_model_prefix)


def run_without_head(model: torch.nn.Module, **inputs):
    """The causal LM's base model (everything but the lm_head): returns last_hidden_state (and hidden_states)."""
    return base_model_of(model)(**inputs)
