"""Batch causal-LM examples into padded tensors, and the deterministic example order of each epoch."""

from __future__ import annotations

import torch

from lmdistill.errors import UserError
from lmdistill.losses import IGNORE_INDEX



def collate_causal(examples: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask (1 = real token), labels (-100 on padding).

    Shapes: all (B, S), S = max len(input_ids), dtype long. The mask comes from the lengths, never from token
    values, so ``pad_token_id`` may equal the EOS id (tokenizers without a pad token) without hiding real EOS tokens.
    """
    batch_size = len(examples)
    seq_len = max(len(example["input_ids"]) for example in examples)
    input_ids = torch.full((batch_size, seq_len), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((batch_size, seq_len), dtype=torch.long)
    labels = torch.full((batch_size, seq_len), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example["input_ids"])
        input_ids[row, :length] = torch.tensor(example["input_ids"], dtype=torch.long)
        attention_mask[row, :length] = 1
        labels[row, :length] = torch.tensor(example["labels"], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches_for_epoch(
    num_examples: int, batch_size: int, seed: int, epoch: int, *, drop_last: bool = True
) -> list[list[int]]:
    """The shuffled example indices of ``epoch``, cut into batches: randperm seeded with seed·1000 + epoch.

    The same arguments always give the same batches, so a resumed run regenerates the order and skips the batches
    it already consumed. ``drop_last`` drops a final batch smaller than ``batch_size``.
    """
    if num_examples < 1 or (drop_last and num_examples < batch_size):
        raise UserError(
            f"{num_examples} training examples cannot fill one batch of train.batch_size={batch_size}; "
            "lower the batch size or add data"
        )
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(num_examples, generator=generator).tolist()
    stop = num_examples - num_examples % batch_size if drop_last else num_examples
    return [order[start : start + batch_size] for start in range(0, stop, batch_size)]
