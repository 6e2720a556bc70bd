"""Batched sampling with ``model.generate`` where every row draws from its own seeded generator.

Why per-row generators: with one global RNG, a row's sample depends on which other rows share its batch, so a
resumed generation run (which skips finished rows) or a different batch size would produce different text. Here the
row's tokens depend only on its seed and its own logits. The mechanism: ``generate`` runs greedy (``do_sample=False``)
and :class:`RowSampler`, the last logits processor, samples the token itself and returns scores that are 0 at the
chosen token and -inf elsewhere, so the greedy argmax picks exactly that token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from lmdistill.config import SamplingConfig


def row_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. seed, prompt_index, sample_index): sha256 of their text, so no collisions in practice."""
    digest = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def warp_scores(scores: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
    """Sampling-temperature, top-k and top-p warping of next-token scores (B, V); removed tokens become -inf.

    scores / τ; keep the k largest; keep the smallest set of most likely tokens whose probability mass reaches p
    (always at least the most likely token). Same semantics as Hugging Face's warpers.
    """
    scores = scores / sampling.temperature
    vocab = scores.shape[-1]
    if 0 < sampling.top_k < vocab:
        kth = torch.topk(scores, sampling.top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the mass of the tokens before it already reaches top_p
        drop_sorted = (cumulative - sorted_scores.softmax(dim=-1)) >= sampling.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


class RowSampler(LogitsProcessor):
    """Samples each row's next token with that row's generator; returns one-hot scores (0 chosen, -inf elsewhere)."""

    def __init__(self, sampling: SamplingConfig, seeds: Sequence[int]):
        self.sampling = sampling
        # CPU generators on every device: the same seed draws the same numbers on CPU and GPU
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = warp_scores(scores.float(), self.sampling).softmax(dim=-1).double()
        # Inverse CDF: one uniform draw per row from its generator (torch.multinomial per row is ~20 ms at V = 50k on CPU).
        uniforms = torch.cat([torch.rand(1, generator=gen, dtype=torch.float64) for gen in self.generators])
        cumulative = probs.cumsum(dim=-1)
        # right=True: the first token whose cumulative mass exceeds u·total, so zero-probability tokens are never chosen
        chosen = torch.searchsorted(cumulative, (uniforms.to(probs.device) * cumulative[:, -1])[:, None], right=True)[:, 0]
        chosen = chosen.clamp(max=probs.shape[-1] - 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, chosen[:, None], 0.0)


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) input_ids and attention_mask (1 = real token) with every sequence aligned to the right edge."""
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            input_ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            attention_mask[row, width - len(seq):] = 1
    return input_ids, attention_mask


def eos_set(eos_token_id: int | Sequence[int] | None) -> set[int]:
    if eos_token_id is None:
        return set()
    return {int(eos_token_id)} if isinstance(eos_token_id, int) else {int(x) for x in eos_token_id}


@torch.no_grad()
def sample_continuations(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    seeds: Sequence[int],
    sampling: SamplingConfig,
    *,
    pad_token_id: int,
    eos_token_id: int | Sequence[int] | None,
) -> list[list[int]]:
    """The generated token ids of each prompt (left-padded batch), cut after the first EOS (EOS kept).

    ``sampling.temperature == 0`` is greedy decoding (seeds unused). The model is put in eval mode and restored.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask = left_pad(prompts, pad_token_id)
    eos = sorted(eos_set(eos_token_id))
    # generate() fills every setting left None from the model's own generation_config (e.g. a random Llama's
    # eos_token_id=2), so the stopping set and the usual logit processors are pinned here: [] = never stop early.
    config = GenerationConfig(
        max_new_tokens=sampling.max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_token_id,
        eos_token_id=eos, repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0,
    )
    processors = LogitsProcessorList([RowSampler(sampling, seeds)] if sampling.temperature > 0 else [])
    was_training = model.training
    model.eval()
    try:
        generated = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            generation_config=config, logits_processor=processors,
        )
    finally:
        model.train(was_training)
    continuations = []
    for row in generated[:, input_ids.shape[1]:].tolist():
        cut = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
        continuations.append(row[:cut])
    return continuations


@torch.no_grad()
def sample_targets(
    model: torch.nn.Module,
    sources: Sequence[Sequence[int]],
    seeds: Sequence[int],
    sampling: SamplingConfig,
    *,
    pad_token_id: int,
    eos_token_id: int | Sequence[int] | None,
    num_beams: int = 1,
) -> list[list[int]]:
    """An encoder-decoder model's generated target ids for each source (right-padded encoder batch), cut after the
    first EOS (EOS kept). The decoder starts from its start token, so there is no prompt to strip: only that first
    token is dropped. ``num_beams`` > 1 is beam search (with ``sampling.temperature`` 0); ``temperature`` 0 and one
    beam is greedy; otherwise each row samples with its own seed. The model is put in eval mode and restored.
    """
    device = next(model.parameters()).device
    width = max(len(ids) for ids in sources)
    input_ids = torch.full((len(sources), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sources), width), dtype=torch.long)
    for row, ids in enumerate(sources):
        input_ids[row, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    eos = sorted(eos_set(eos_token_id))
    config = GenerationConfig(
        max_new_tokens=sampling.max_new_tokens, do_sample=False, num_beams=num_beams, pad_token_id=pad_token_id,
        eos_token_id=eos, repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0,
        decoder_start_token_id=model.config.decoder_start_token_id,
    )
    processors = LogitsProcessorList([RowSampler(sampling, seeds)] if sampling.temperature > 0 and num_beams == 1 else [])
    was_training = model.training
    model.eval()
    try:
        generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                   generation_config=config, logits_processor=processors)
    finally:
        model.train(was_training)
    targets = []
    for row in generated[:, 1:].tolist():  # column 0 is the decoder start token
        cut = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
        targets.append(row[:cut])
    return targets
