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
    batches: list[dict[str, torch.Tensor]],
    *,
    row_seeds: list[list[int]],
    pad_token_id: int,
    eos_token_id: int | list[int] | None,
    sampling: SamplingConfig,
) -> list[dict[str, torch.Tensor]]:
    """Each batch as a new right-padded causal batch: each row's prompt followed by up to ``sampling.max_new_tokens``
    student samples. Every row of every batch is sampled in one ``generate`` call (one KV cache for the step).

    batches: input_ids, attention_mask, labels (B, S), right-padded, -100 on prompt and padding. The prompt of a row
    is its tokens before the first label ≠ -100 (the first token when the loss starts at 0). ``row_seeds[b][r]``
    seeds row r of batch b, so a row's sample does not depend on the rows beside it. Returns per batch input_ids,
    attention_mask, labels (B, S'), S' = max(prompt + generated) over its rows; labels = the generated ids (up to
    and including a generated EOS, nothing after it), -100 on prompt and padding. The student runs in eval mode
    under no_grad and its mode is restored.
    """
    prompts, seeds = [], []
    for batch, batch_seeds in zip(batches, row_seeds, strict=True):
        lengths = prompt_lengths(batch["labels"], batch["attention_mask"])
        prompts.append([row[:length] for row, length in zip(batch["input_ids"].tolist(), lengths)])
        seeds.extend(batch_seeds)
    flat_prompts = [prompt for batch_prompts in prompts for prompt in batch_prompts]
    generated = sample_continuations(student, flat_prompts, seeds, sampling, pad_token_id=pad_token_id,
                                     eos_token_id=eos_token_id)
    out, offset = [], 0
    for batch, batch_prompts in zip(batches, prompts):
        continuations = generated[offset:offset + len(batch_prompts)]
        offset += len(batch_prompts)
        out.append(_causal_batch(batch_prompts, continuations, pad_token_id, batch["input_ids"].device))
    return out


def _causal_batch(prompts: list[list[int]], continuations: list[list[int]], pad_token_id: int, device) -> dict[str, torch.Tensor]:
    """A right-padded batch of prompt + continuation rows, labels on the continuations only."""
    width = max(len(p) + len(g) for p, g in zip(prompts, continuations))
    out_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    out_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    out_labels = torch.full((len(prompts), width), IGNORE_INDEX, dtype=torch.long)
    for row, (prompt, continuation) in enumerate(zip(prompts, continuations)):
        end = len(prompt) + len(continuation)
        out_ids[row, :end] = torch.tensor(prompt + continuation, dtype=torch.long)
        out_mask[row, :end] = 1
        out_labels[row, len(prompt):end] = torch.tensor(continuation, dtype=torch.long)
    return {"input_ids": out_ids.to(device), "attention_mask": out_mask.to(device), "labels": out_labels.to(device)}


__all__ = ["prompt_lengths", "student_rollout"]
