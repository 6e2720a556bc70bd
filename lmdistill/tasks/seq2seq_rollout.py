"""Encoder-decoder rollouts for on-policy distillation (GKD): a batch's targets replaced by the student's own samples
for the same sources. The source stays; the sampled target becomes the labels and the decoder inputs."""

from __future__ import annotations

import torch

from lmdistill.config import SamplingConfig
from lmdistill.data.sampling import sample_targets
from lmdistill.losses import IGNORE_INDEX


def seq2seq_rollout(student: torch.nn.Module, batches: list[dict[str, torch.Tensor]], *, tokenizer,
                    sampling: SamplingConfig, row_seeds: list[list[int]], decoder_inputs) -> list[dict[str, torch.Tensor]]:
    """Each batch with labels (B, T') = the student's samples for each source (up to and including a sampled EOS,
    -100 after it), decoder inputs rebuilt from them by ``decoder_inputs`` and decoder_attention_mask from their
    lengths. The sources of all batches are generated from in one call; ``row_seeds[b][r]`` seeds row r of batch b.
    The student runs in eval mode under no_grad and its mode is restored."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    sources = [row[:int(length)] for batch in batches
               for row, length in zip(batch["input_ids"].tolist(), batch["attention_mask"].sum(dim=1).tolist())]
    seeds = [seed for batch_seeds in row_seeds for seed in batch_seeds]
    samples = sample_targets(student, sources, seeds, sampling, pad_token_id=pad, eos_token_id=eos)
    out, offset = [], 0
    for batch in batches:
        rows = samples[offset:offset + batch["input_ids"].shape[0]]
        offset += len(rows)
        width = max(len(sample) for sample in rows)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        decoder_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, sample in enumerate(rows):
            labels[row, : len(sample)] = torch.tensor(sample, dtype=torch.long)
            decoder_mask[row, : len(sample)] = 1
        device = batch["input_ids"].device
        labels = labels.to(device)
        out.append({**batch, "labels": labels, "decoder_input_ids": decoder_inputs(labels),
                    "decoder_attention_mask": decoder_mask.to(device)})
    return out
