"""collate_causal padding values and masks; batches_for_epoch order."""

from __future__ import annotations

import pytest
import torch

from lmdistill.data import batches_for_epoch, collate_causal
from lmdistill.errors import UserError

IGNORE = -100


def test_collate_right_pads_with_exact_values():
    examples = [
        {"input_ids": [5, 6, 7], "labels": [IGNORE, 6, 7]},
        {"input_ids": [8], "labels": [8]},
        {"input_ids": [9, 10], "labels": [9, IGNORE]},
    ]
    batch = collate_causal(examples, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE], [9, IGNORE, IGNORE]]
    assert {t.dtype for t in batch.values()} == {torch.long}


def test_collate_mask_comes_from_lengths_when_pad_equals_real_tokens():
    eos = 50256
    examples = [{"input_ids": [1, eos], "labels": [1, eos]}, {"input_ids": [eos, 2, eos, eos], "labels": [eos, 2, eos, eos]}]
    batch = collate_causal(examples, pad_token_id=eos)
    assert batch["input_ids"].tolist() == [[1, eos, eos, eos], [eos, 2, eos, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[1, eos, IGNORE, IGNORE], [eos, 2, eos, eos]]


def test_batches_for_epoch_is_the_seeded_permutation():
    batches = batches_for_epoch(10, 3, seed=2, epoch=1)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(2 * 1000 + 1)).tolist()
    assert batches == [order[0:3], order[3:6], order[6:9]]
    assert batches_for_epoch(10, 3, seed=2, epoch=1) == batches
    assert batches_for_epoch(10, 3, seed=2, epoch=2) != batches
    full = batches_for_epoch(10, 3, seed=2, epoch=1, drop_last=False)
    assert full == batches + [order[9:]] and sorted(i for b in full for i in b) == list(range(10))
    assert batches_for_epoch(2, 4, seed=0, epoch=0, drop_last=False) == [
        torch.randperm(2, generator=torch.Generator().manual_seed(0)).tolist()
    ]


def test_batches_for_epoch_too_few_examples():
    with pytest.raises(UserError, match=r"3 training examples cannot fill one batch of train\.batch_size=4"):
        batches_for_epoch(3, 4, seed=0, epoch=0)
    with pytest.raises(UserError, match=r"0 training examples"):
        batches_for_epoch(0, 4, seed=0, epoch=0, drop_last=False)
