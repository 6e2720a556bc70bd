"""Encoder-decoder evaluation: decoder perplexity and teacher agreement on held-out pairs, and generation (greedy or
beam) from sources alone, decoded without anything in front of it (the decoder starts from its start token)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmdistill.data.seq2seq import collate_seq2seq, cut
from lmdistill.eval.held_out import held_out_scores


def decoder_inputs_of(model: torch.nn.Module):
    """The model's own rule for decoder inputs from labels (T5 ``_shift_right``, BART ``shift_tokens_right`` ...)."""
    return lambda labels: model.prepare_decoder_input_ids_from_labels(labels=labels)


@torch.no_grad()
def seq2seq_scores(student, teacher, examples: list[dict], pad_id: int, batch_size: int, device) -> dict[str, float]:
    """Scores over the target tokens of ``examples`` ({"input_ids": source, "labels": target}).

    Decoder position t scores target token t (teacher forcing). Returns ``nll_per_token``, ``perplexity`` =
    exp(nll_per_token), ``num_tokens`` and, with ``teacher``, ``top1_agreement`` and ``mean_token_kl`` = KL(p_t ‖ p_s)
    at temperature 1 over the shared vocabulary. Both models run in eval mode; modes are restored.
    """
    decoder_inputs = decoder_inputs_of(student)
    batches = ({key: value.to(device) for key, value in collate_seq2seq(examples[start:start + batch_size], pad_id, decoder_inputs).items()}
               for start in range(0, len(examples), batch_size))

    def forward(model, batch):
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return model(**inputs).logits, batch["labels"]

    return held_out_scores(student, teacher, batches, forward)


def generate_seq2seq(model: torch.nn.Module, tokenizer, sources: Sequence[str], *, max_new_tokens: int, num_beams: int = 1,
                     batch_size: int = 16, source_prefix: str = "", max_source_length: int | None = None) -> list[str]:
    """Outputs of ``model`` for ``prefix + source`` (greedy when ``num_beams`` is 1, else beam search), decoded
    without special tokens. The generated ids start with the decoder start token and hold no prompt: everything after
    the start token up to the first EOS is the output."""
    return [tokenizer.decode(ids, skip_special_tokens=True).strip()
            for ids in generate_seq2seq_ids(model, tokenizer, sources, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                            batch_size=batch_size, source_prefix=source_prefix,
                                            max_source_length=max_source_length)]


def generate_seq2seq_ids(model: torch.nn.Module, tokenizer, sources: Sequence[str], *, max_new_tokens: int,
                         num_beams: int = 1, batch_size: int = 16, source_prefix: str = "",
                         max_source_length: int | None = None) -> list[list[int]]:
    """The generated target ids of each source, without the decoder start token, cut after the first EOS (kept)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    device = next(model.parameters()).device
    encoded = tokenizer([source_prefix + text for text in sources], add_special_tokens=True)["input_ids"]
    if max_source_length is not None:
        special = set(tokenizer.all_special_ids) | {eos_id}
        encoded = [cut(ids, max_source_length, special) for ids in encoded]
    outputs: list[list[int]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start:start + batch_size]
                width = max(len(ids) for ids in chunk)
                input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, ids in enumerate(chunk):
                    input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, : len(ids)] = 1
                generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                           max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                                           pad_token_id=pad_id, eos_token_id=eos_id)
                for row in generated[:, 1:].tolist():  # column 0 is the decoder start token
                    end = next((i + 1 for i, token in enumerate(row) if token == eos_id), len(row))
                    outputs.append(row[:end])
    finally:
        model.train(was_training)
    return outputs
