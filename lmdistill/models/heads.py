"""Output heads: the lm_head of a causal LM and running the model without it (large vocabularies).

With a large vocabulary the engine never materialises (tokens x vocab) logits: models run without their lm_head and
logit terms are computed chunk by chunk from the last hidden state and the head's weight.
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import Seq2SeqModelOutput

# The batch keys a model is called with (encoder-decoder batches add the decoder's inputs, built by the task's
# collator); the rest of a batch (labels, masks, positions) is for the losses.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "decoder_input_ids", "decoder_attention_mask")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The part of ``batch`` that a model's forward takes."""
    return {key: batch[key] for key in MODEL_INPUTS if key in batch}


def output_head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """The lm_head weight (V, H), its bias, and the final-logit softcap of a causal LM (Gemma-style), if any.

    BART-family models add a ``final_logits_bias`` buffer (1, V) after their bias-free head: it is the head's bias.
    """
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    bias = getattr(head, "bias", None)
    extra = getattr(model.get_base_model() if hasattr(model, "get_base_model") else model, "final_logits_bias", None)
    if extra is not None:
        bias = extra[0] if bias is None else bias + extra[0]
    return head.weight, bias, softcap


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
    """The model without its lm_head: returns last_hidden_state (and with ``output_hidden_states``, hidden_states for
    causal LMs, encoder_hidden_states and decoder_hidden_states for encoder-decoder models).

    A causal LM runs its base model. An encoder-decoder model runs whole and its forward stops at the lm_head, whose
    input is taken as the last hidden state: whatever the model does between its decoder and its head (T5 scales the
    decoder output by d_model^-1/2) is kept, with no per-architecture code. Its stacks' hidden states are taken from
    the encoder's and decoder's own outputs on the way.
    """
    if getattr(model.config, "is_encoder_decoder", False):
        return _head_input(model, **inputs)
    return base_model_of(model)(**inputs)


class _HeadReached(Exception):
    """Raised by the hook on the lm_head to end a forward there."""


def _head_input(model: torch.nn.Module, **inputs) -> Seq2SeqModelOutput:
    captured: list[torch.Tensor] = []
    stack_outputs: dict[str, object] = {}

    def stop(_module, args):
        captured.append(args[0])
        raise _HeadReached

    def keep(name):
        return lambda _module, _args, output: stack_outputs.__setitem__(name, output)

    handles = [model.get_output_embeddings().register_forward_pre_hook(stop)]
    if inputs.get("output_hidden_states"):
        handles += [model.get_encoder().register_forward_hook(keep("encoder")),
                    model.get_decoder().register_forward_hook(keep("decoder"))]
    try:
        model(**inputs)
    except _HeadReached:
        pass
    finally:
        for handle in handles:
            handle.remove()
    if not captured:
        raise AssertionError(f"{type(model).__name__} never called its output head")
    hidden = {name: getattr(output, "hidden_states", None) for name, output in stack_outputs.items()}
    return Seq2SeqModelOutput(last_hidden_state=captured[0], encoder_hidden_states=hidden.get("encoder"),
                              decoder_hidden_states=hidden.get("decoder"))
