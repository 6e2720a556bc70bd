"""Data: readers for local files and `datasets` ids, causal-LM tokenisation, collation and epoch order."""

from lmdistill.data.causal import (
    BuildStats,
    build_causal_examples,
    build_causal_examples_with_stats,
    load_causal_datasets,
    loss_token_fraction,
    split_eval,
)
from lmdistill.data.collate import batches_for_epoch, collate_causal
from lmdistill.losses import IGNORE_INDEX
from lmdistill.data.readers import SUPPORTED_SUFFIXES, read_records

__all__ = [
    "IGNORE_INDEX",
    "SUPPORTED_SUFFIXES",
    "BuildStats",
    "batches_for_epoch",
    "build_causal_examples",
    "build_causal_examples_with_stats",
    "collate_causal",
    "load_causal_datasets",
    "loss_token_fraction",
    "read_records",
    "split_eval",
]
