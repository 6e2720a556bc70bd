"""Encoder-decoder rollouts for on-policy distillation (GKD): a batch's targets replaced by the student's own samples
for the same sources. The source stays; the sampled target becomes the labels and the decoder inputs."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessorList

from lmdistill.config import SamplingConfig
from lmdistill.data.sampling import RowSampler
from lmdistill.losses import IGNORE_INDEX


def seq2seq_rollout(student: torch.nn.Module, batch: dict[str, torch.Tensor], *, tokenizer, sampling: SamplingConfig,
                    generator: torch.Generator, decoder_inputs) -> dict[str, torch.Tensor]:
    """The batch with labels (B, T') = the student's samples for each source (up to and including a sampled EOS,
    -100 after it), decoder inputs rebuilt from them by ``decoder_inputs`` and decoder_attention_mask from their
    lengths. Each row draws from its own generator seeded by ``generator`` (which advances by B draws); the student
    runs in eval mode under no_grad and its mode is restored."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    seeds = torch.randint(0, 2**62, (batch["input_ids"].shape[0],), generator=generator, device=generator.device).tolist()
    config = GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
                              eos_token_id=[eos], repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0,
                              decoder_start_token_id=student.config.decoder_start_token_id)
    processors = LogitsProcessorList([RowSampler(sampling, seeds)] if sampling.temperature > 0 else [])
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            generated = student.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                         generation_config=config, logits_processor=processors)
    finally:
        student.train(was_training)
    samples = []
    for row in generated[:, 1:].tolist():  # column 0 is the decoder start token
        cut = next((i + 1 for i, token in enumerate(row) if token == eos), len(row))
        samples.append(row[:max(cut, 1)])
    width = max(len(sample) for sample in samples)
    labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.long)
    decoder_mask = torch.zeros((len(samples), width), dtype=torch.long)
    for row, sample in enumerate(samples):
        labels[row, : len(sample)] = torch.tensor(sample, dtype=torch.long)
        decoder_mask[row, : len(sample)] = 1
    device = batch["input_ids"].device
    labels = labels.to(device)
    return {**batch, "labels": labels, "decoder_input_ids": decoder_inputs(labels),
            "decoder_attention_mask": decoder_mask.to(device)}
