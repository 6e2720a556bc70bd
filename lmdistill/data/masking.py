"""Input masking for classification training: each ordinary token becomes the mask token with a fixed probability.

The teacher and the student read the same masked batch, so a distilled student gets the teacher's answer for the
masked text, and a label-only student gets the gold label for it (the regularisation of word dropout). The pattern is
drawn from a generator seeded by (run seed, step, micro-batch, process), so a resumed run masks exactly as before.
"""

from __future__ import annotations

import torch

from lmdistill.data.sampling import row_seed


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, *, probability: float, mask_token_id: int,
                protected_ids: list[int], generator: torch.Generator) -> torch.Tensor:
    """A copy of ``input_ids`` (B, S) where each attended token not in ``protected_ids`` (e.g. [CLS], [SEP]) is
    replaced by ``mask_token_id`` with ``probability``, independently; padding and protected tokens stay."""
    draws = torch.rand(input_ids.shape, generator=generator, device="cpu").to(input_ids.device)
    maskable = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(protected_ids, dtype=input_ids.dtype, device=input_ids.device))
    return torch.where(maskable & (draws < probability), torch.full_like(input_ids, mask_token_id), input_ids)


def masking_generator(seed: int, step: int, micro_batch: int, process: int) -> torch.Generator:
    """The generator for one micro-batch's masking pattern: a function of the run seed and the batch's position."""
    return torch.Generator().manual_seed(row_seed(seed, step, micro_batch, process))
