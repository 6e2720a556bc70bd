"""Batch transforms applied to a step's micro-batches before the models see them: input masking and on-policy samples.

A transform takes all micro-batches of one optimizer step at once (so on-policy samples for the whole step come from
one generation call) and is a pure function of (run seed, step, micro-batch index, process) and the batches, so every
process and a resumed run transform exactly the same way.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import torch

from lmdistill.config import OnPolicyConfig
from lmdistill.data.masking import mask_tokens, masking_generator
from lmdistill.data.sampling import row_seed
from lmdistill.errors import UserError

# Key of a batch whose targets are the student's own samples (read by terms with ``batches: samples`` / ``batches: data``).
STUDENT_SAMPLES = "student_samples"


class BatchTransform(Protocol):
    def __call__(self, micro_batches: list[dict[str, torch.Tensor]], *, step: int, rank: int,
                 student: torch.nn.Module) -> list[dict[str, torch.Tensor]]: ...


class MaskInputs:
    """``data.mask_probability``: ordinary tokens become the mask token; teacher and student read the same batch."""

    def __init__(self, probability: float, tokenizer, seed: int):
        if tokenizer.mask_token_id is None:
            raise UserError(f"data.mask_probability={probability} needs a tokenizer with a mask token and this one has "
                            "none; set data.mask_probability: 0 or use a tokenizer with [MASK]")
        self.settings = {"probability": probability, "mask_token_id": tokenizer.mask_token_id,
                         "protected_ids": sorted(set(tokenizer.all_special_ids))}
        self.seed = seed

    def __call__(self, micro_batches, *, step, rank, student):
        masked = []
        for micro_index, batch in enumerate(micro_batches):
            generator = masking_generator(self.seed, step, micro_index, rank)
            ids = mask_tokens(batch["input_ids"], batch["attention_mask"], **self.settings, generator=generator)
            masked.append({**batch, "input_ids": ids})
        return masked


def should_use_student_samples(seed: int, step: int, micro_index: int, lmbda: float) -> bool:
    """Whether micro-batch ``micro_index`` of optimizer step ``step`` uses student samples: u < λ.

    u ∈ [0, 1) is the top 53 bits of sha256("seed:step:micro_index"), so the decision is a pure function of its
    arguments (a resumed run replays the same choices) and P(True) = λ over many steps.
    """
    digest = hashlib.sha256(f"{int(seed)}:{int(step)}:{int(micro_index)}".encode()).digest()
    u = (int.from_bytes(digest[:8], "little") >> 11) / 2.0**53
    return u < lmbda


def rollout_row_seeds(seed: int, step: int, micro_index: int, rank: int, rows: int) -> list[int]:
    """The sampling seed of each row of one micro-batch: ``rows`` draws from a generator seeded by its position."""
    generator = torch.Generator().manual_seed(row_seed(seed, step, micro_index, rank))
    return torch.randint(0, 2**62, (rows,), generator=generator).tolist()


class OnPolicySamples:
    """GKD (Agarwal et al. 2024): with probability λ a micro-batch's targets become the student's own samples from
    the same prompts (the task's ``rollout``, one generation call for every chosen micro-batch of the step); the
    teacher then scores them with the objective's terms. Such batches carry ``STUDENT_SAMPLES``."""

    def __init__(self, settings: OnPolicyConfig, task, tokenizer, seed: int):
        self.settings, self.task, self.tokenizer, self.seed = settings, task, tokenizer, seed

    def __call__(self, micro_batches, *, step, rank, student):
        chosen = [i for i in range(len(micro_batches))
                  if should_use_student_samples(self.seed, step, i, self.settings.lmbda)]
        if not chosen:
            return micro_batches
        seeds = [rollout_row_seeds(self.seed, step, i, rank, micro_batches[i]["input_ids"].shape[0]) for i in chosen]
        rolled = self.task.rollout(student, [micro_batches[i] for i in chosen], tokenizer=self.tokenizer,
                                   sampling=self.settings.sampling, row_seeds=seeds)
        out = list(micro_batches)
        for i, batch in zip(chosen, rolled):
            out[i] = {**batch, STUDENT_SAMPLES: torch.ones((), dtype=torch.bool)}
        return out
