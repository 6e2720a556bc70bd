"""Causal language modelling: next-token prediction; the loss covers positions whose next token has a label."""

from __future__ import annotations

import torch

from lmdistill.data.causal import load_causal_datasets
from lmdistill.data.collate import collate_causal
from lmdistill.train.evaluate import evaluate_student


class CausalLMTask:
    name = "causal_lm"

    def load_datasets(self, data, tokenizer, seed):
        return load_causal_datasets(data, tokenizer, seed)

    def collate(self, examples, pad_token_id):
        return collate_causal(examples, pad_token_id)

    def align_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, S, V) -> (B, S-1, V): position t predicts token t+1."""
        return logits[:, :-1]

    def targets(self, batch):
        targets = batch["labels"][:, 1:]
        return targets, targets != -100

    def evaluate(self, student, teacher, examples, pad_token_id, batch_size, device):
        return evaluate_student(student, teacher, examples, pad_token_id, batch_size, device)
