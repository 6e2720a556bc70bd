"""Causal language modelling: next-token prediction; the loss covers positions whose next token has a label."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from lmdistill.data.causal import load_causal_datasets
from lmdistill.data.collate import collate_causal
from lmdistill.data.streaming import load_streamed_datasets, stream_causal_examples
from lmdistill.eval.held_out import causal_lm_scores
from lmdistill.losses import IGNORE_INDEX
from lmdistill.tasks.base import OneLayerStack
from lmdistill.tasks.causal_rollout import student_rollout


class CausalLMTask(OneLayerStack):
    name = "causal_lm"
    model_class = AutoModelForCausalLM
    lora_task_type = "CAUSAL_LM"
    data_fields = frozenset({"format", "text_field", "prompt_field", "completion_field", "messages_field", "pack",
                             "streaming"})
    headless_logits = True
    pipeline_tag = "text-generation"
    samples_from_prompts = True
    cached_positions = "input_ids"

    def bind_model(self, model):
        return None

    def load_datasets(self, data, tokenizer, seed):
        if data.streaming:  # the first examples of the stream, for the checks before training
            return load_streamed_datasets(data, tokenizer)
        return load_causal_datasets(data, tokenizer, seed)

    def stream_train(self, data, tokenizer):
        return stream_causal_examples(data, tokenizer)

    def model_kwargs(self):
        return {}

    def collate(self, examples, pad_token_id):
        return collate_causal(examples, pad_token_id)

    def output_logits(self, output, batch) -> torch.Tensor:
        """(B, S, V) -> (B, S-1, V): position t predicts token t+1."""
        return self.align_positions(output.logits)

    def align_positions(self, per_token: torch.Tensor) -> torch.Tensor:
        return per_token[:, :-1]

    def targets(self, batch):
        targets = batch["labels"][:, 1:]
        return targets, targets != IGNORE_INDEX

    def evaluate(self, student, teacher, examples, pad_token_id, batch_size, device):
        scores = causal_lm_scores(student, teacher, examples, pad_token_id, batch_size, device)
        renamed = {"nll_per_token": "loss"}
        return {f"eval/{renamed.get(key, key)}": value for key, value in scores.items() if key != "num_tokens"}

    def rollout(self, student, batches, *, tokenizer, sampling, row_seeds):
        return student_rollout(student, batches, row_seeds=row_seeds, pad_token_id=tokenizer.pad_token_id,
                               eos_token_id=tokenizer.eos_token_id, sampling=sampling)
