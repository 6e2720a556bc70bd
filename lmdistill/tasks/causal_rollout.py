"""Causal-LM rollouts for on-policy distillation (GKD, Agarwal et al. 2024): a batch's completions replaced by the
student's own samples from the same prompts. Prompt tokens never enter the loss."""

from __future__ import annotations

import torch

from lmdistill.config import SamplingConfig
from lmdistill.data.sampling import sample_continuations
from lmdistill.losses import IGNORE_INDEX


def prompt_lengths(labels: torch.Tensor, attention_mask: torch.Tensor) -> list[int]:
    """Per row: the position of the first label ≠ -100, at least 1; a row with no label keeps all its real tokens.

    labels, attention_mask: (B, S), right-padded, labels unshifted (HF convention).
    """
    lengths = []
    for row_labels, row_mask in zip(labels.tolist(), attention_mask.tolist()):
        first = next((i for i, label in enumerate(row_labels) if label != IGNORE_INDEX), None)
        lengths.append(max(1, first) if first is not None else max(1, int(sum(row_mask))))
    return lengths


def student_rollout(
    student: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    pad_token_id: int,
    eos_token_id: int | list[int] | None,
    sampling: SamplingConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """A new right-padded causal batch: each row's prompt followed by up to ``sampling.max_new_tokens`` student samples.

    batch: input_ids, attention_mask, labels (B, S), right-padded, -100 on prompt and padding. The prompt of a row
    is its tokens before the first label ≠ -100 (the first token when the loss starts at 0). Returns input_ids,
    attention_mask, labels (B, S'), S' = max(prompt + generated); labels = the generated ids (up to and including
    a generated EOS, nothing after it), -100 on prompt and padding. Each row draws from its own generator seeded by
    ``generator`` (which advances by B draws); the student runs in eval mode under no_grad and its mode is restored.
    """
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    lengths = prompt_lengths(labels, attention_mask)
    prompts = [row[:length] for row, length in zip(input_ids.tolist(), lengths)]
    seeds = torch.randint(0, 2**62, (len(prompts),), generator=generator, device=generator.device).tolist()
    generated = sample_continuations(student, prompts, seeds, sampling, pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    width = max(len(p) + len(g) for p, g in zip(prompts, generated))
    out_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    out_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    out_labels = torch.full((len(prompts), width), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt, continuation) in enumerate(zip(prompts, generated)):
        end = len(prompt) + len(continuation)
        out_ids[row, :end] = torch.tensor(prompt + continuation, dtype=torch.long)
        out_mask[row, :end] = 1
        out_labels[row, len(prompt):end] = torch.tensor(continuation, dtype=torch.long)
    device = input_ids.device
    return {"input_ids": out_ids.to(device), "attention_mask": out_mask.to(device), "labels": out_labels.to(device)}


__all__ = ["prompt_lengths", "student_rollout"]
