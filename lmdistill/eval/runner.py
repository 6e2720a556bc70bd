"""Run models over text: held-out perplexity and teacher agreement, greedy generation scored by text metrics.

Student and teacher must share a tokenizer (the same token ids); their vocabulary sizes may differ (padded
embedding tables), and agreement is measured over the shared ids 0 .. min(V_s, V_t) − 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmdistill.errors import UserError
from lmdistill.eval.footprint import measure_latency, model_footprint
from lmdistill.eval.held_out import causal_lm_scores
from lmdistill.eval.lm_metrics import bits_per_byte
from lmdistill.eval.text_metrics import References, bleu, chrf, rouge

__all__ = ["evaluate_causal_lm", "evaluate_generation", "generate_greedy", "greedy_from_ids", "measure_latency", "model_footprint"]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    # Padded positions are masked out everywhere, so any id works when the tokenizer defines no pad token.
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _pad(sequences: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists to one (B, S) tensor; returns ``input_ids`` and ``attention_mask`` (1 = real token)."""
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, span] = 1
    return input_ids, attention_mask


def _scored_bytes(tokenizer, token_ids: list[int]) -> int:
    """UTF-8 bytes of the tokens that get scored (all but the first), special tokens excluded."""
    # no clean-up: GPT-2-style clean-up turns " ." into "." and would undercount the bytes actually predicted
    text = tokenizer.decode(token_ids[1:], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return len(text.encode("utf-8"))


def evaluate_causal_lm(
    model: torch.nn.Module,
    tokenizer,
    texts: Sequence[str],
    *,
    teacher: torch.nn.Module | None = None,
    max_length: int = 256,
    batch_size: int = 8,
) -> dict[str, float]:
    """Perplexity and bits per byte of ``model`` on held-out ``texts``; with a teacher, top-1 agreement and KL.

    Each text is tokenised (special tokens included, truncated to ``max_length``) and scored by
    :func:`lmdistill.eval.held_out.causal_lm_scores` (every token after the first). Bytes for bits per byte are the
    UTF-8 bytes of the scored tokens decoded without special tokens. Returns ``perplexity``, ``bits_per_byte``,
    ``nll_per_token``, ``num_tokens`` and, with ``teacher``, ``top1_agreement`` and ``mean_token_kl``.
    """
    if not texts:
        raise UserError("no evaluation texts: give at least one held-out text")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    examples = [{"input_ids": ids, "labels": ids} for ids in encoded if len(ids) >= 2]
    if not examples:
        raise UserError("evaluation texts give no token to score: each text needs at least two tokens")
    scores = causal_lm_scores(model, teacher, examples, _pad_id(tokenizer), batch_size, _device(model))
    scored_bytes = sum(_scored_bytes(tokenizer, example["input_ids"]) for example in examples)
    return {**scores, "bits_per_byte": bits_per_byte(scores["nll_per_token"] * scores["num_tokens"], scored_bytes)}


def eos_token_ids(model: torch.nn.Module, tokenizer) -> set[int]:
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates = config_eos if isinstance(config_eos, list) else [config_eos]
    return {int(x) for x in [*candidates, tokenizer.eos_token_id] if x is not None}


def generate_greedy(
    model: torch.nn.Module, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy continuations of ``prompts`` (left-padded batches), decoded without the prompt and special tokens.

    Each continuation is cut at its first end-of-sequence token.
    """
    encoded = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    return greedy_from_ids(model, tokenizer, encoded, max_new_tokens=max_new_tokens, batch_size=batch_size)


def greedy_from_ids(
    model: torch.nn.Module, tokenizer, prompts: Sequence[list[int]], *, max_new_tokens: int, batch_size: int = 8
) -> list[str]:
    """Greedy continuations of tokenised prompts (e.g. a chat rendered up to the assistant turn), decoded like
    :func:`generate_greedy`."""
    pad_id = _pad_id(tokenizer)
    eos_ids = eos_token_ids(model, tokenizer)
    device = _device(model)
    outputs: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                input_ids, attention_mask = _pad(list(prompts[start : start + batch_size]), pad_id, "left")
                generated = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad_id,
                )
                for row in generated[:, input_ids.shape[1] :].tolist():
                    cut = next((i for i, token in enumerate(row) if token in eos_ids), len(row))
                    outputs.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    finally:
        model.train(was_training)
    return outputs


def evaluate_generation(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[str],
    references: References,
    *,
    max_new_tokens: int,
    teacher: torch.nn.Module | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Score greedy generations against references: ``rouge1``, ``rouge2``, ``rougeL`` (0-1), ``bleu``, ``chrf`` (0-100).

    With ``teacher``, also ``teacher_rougeL_agreement``: mean ROUGE-L F-measure of the student's output against
    the teacher's greedy output for the same prompt.
    """
    if not prompts:
        raise UserError("no generation prompts: give at least one prompt with its reference")
    if len(prompts) != len(references):
        raise UserError(f"{len(prompts)} prompts but {len(references)} references: give one reference (or list) per prompt")
    predictions = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    results = dict(rouge(predictions, references))
    results["bleu"] = bleu(predictions, references)
    results["chrf"] = chrf(predictions, references)
    if teacher is not None:
        teacher_outputs = generate_greedy(teacher, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        results["teacher_rougeL_agreement"] = rouge(predictions, teacher_outputs)["rougeL"]
    return results
