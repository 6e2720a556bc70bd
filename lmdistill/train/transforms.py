"""Batch transforms applied to each micro-batch before the models see it: input masking and on-policy samples.

Each is a pure function of (run seed, step, micro-batch, process) and the batch, so every process and a resumed run
transform exactly the same way.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import torch

from lmdistill.config import OnPolicyConfig
from lmdistill.data.masking import mask_tokens, masking_generator
from lmdistill.data.sampling import row_seed
from lmdistill.errors import UserError


class BatchTransform(Protocol):
    def __call__(self, batch: dict[str, torch.Tensor], *, step: int, micro_index: int, rank: int,
                 student: torch.nn.Module) -> dict[str, torch.Tensor]: ...


class MaskInputs:
    """``data.mask_probability``: ordinary tokens become the mask token; teacher and student read the same batch."""

    def __init__(self, probability: float, tokenizer, seed: int):
        if tokenizer.mask_token_id is None:
            raise UserError(f"data.mask_probability={probability} needs a tokenizer with a mask token and this one has "
                            "none; set data.mask_probability: 0 or use a tokenizer with [MASK]")
        self.settings = {"probability": probability, "mask_token_id": tokenizer.mask_token_id,
                         "protected_ids": sorted(set(tokenizer.all_special_ids))}
        self.seed = seed

    def __call__(self, batch, *, step, micro_index, rank, student):
        generator = masking_generator(self.seed, step, micro_index, rank)
        return {**batch, "input_ids": mask_tokens(batch["input_ids"], batch["attention_mask"], **self.settings, generator=generator)}


def should_use_student_samples(seed: int, step: int, micro_index: int, lmbda: float) -> bool:
    """Whether micro-batch ``micro_index`` of optimizer step ``step`` uses student samples: u < λ.

    u ∈ [0, 1) is the top 53 bits of sha256("seed:step:micro_index"), so the decision is a pure function of its
    arguments (a resumed run replays the same choices) and P(True) = λ over many steps.
    """
    digest = hashlib.sha256(f"{int(seed)}:{int(step)}:{int(micro_index)}".encode()).digest()
    u = (int.from_bytes(digest[:8], "little") >> 11) / 2.0**53
    return u < lmbda


class OnPolicySamples:
    """GKD (Agarwal et al. 2024): with probability λ a micro-batch's targets become the student's own samples from
    the same prompts (the task's ``rollout``); the teacher then scores them with the objective's divergences."""

    def __init__(self, settings: OnPolicyConfig, task, tokenizer, seed: int):
        self.settings, self.task, self.tokenizer, self.seed = settings, task, tokenizer, seed

    def __call__(self, batch, *, step, micro_index, rank, student):
        if not should_use_student_samples(self.seed, step, micro_index, self.settings.lmbda):
            return batch
        generator = torch.Generator().manual_seed(row_seed(self.seed, step, micro_index, rank))
        return self.task.rollout(student, batch, tokenizer=self.tokenizer, sampling=self.settings.sampling, generator=generator)
