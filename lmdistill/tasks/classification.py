"""Sequence classification (single sentences or pairs): one (B, C) logit row per example, the loss on every row."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from lmdistill.data.classification import collate_classification, load_classification_datasets
from lmdistill.errors import UserError
from lmdistill.eval.classification import accuracy, macro_f1, matthews_corrcoef
from lmdistill.tasks.base import OneLayerStack, no_rollout


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors a Hugging Face classifier takes from a collated batch (segment ids only when present)."""
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return {key: batch[key] for key in keys if key in batch}


@torch.no_grad()
def predict_logits(model, examples: list[dict], pad_token_id: int, batch_size: int, device) -> torch.Tensor:
    """Class logits of ``model`` for ``examples`` in order, in eval mode: (N, C) float32 on the CPU."""
    was_training = model.training
    model.eval()
    rows = []
    for start in range(0, len(examples), batch_size):
        batch = collate_classification(examples[start:start + batch_size], pad_token_id)
        rows.append(model(**{k: v.to(device) for k, v in model_inputs(batch).items()}).logits.float().cpu())
    model.train(was_training)
    return torch.cat(rows)


def classification_scores(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None) -> dict[str, float]:
    """``eval/accuracy``, ``eval/macro_f1``, ``eval/mcc``, ``eval/loss`` (mean CE) from (N, C) logits and (N,) labels;
    with teacher logits also ``eval/teacher_agreement`` = fraction of argmax_s == argmax_t and the teacher's accuracy."""
    predictions = student_logits.argmax(-1)
    scores = {
        "eval/accuracy": accuracy(predictions, labels),
        "eval/macro_f1": macro_f1(predictions, labels),
        "eval/mcc": matthews_corrcoef(predictions, labels),
        "eval/loss": float(torch.nn.functional.cross_entropy(student_logits.double(), labels)),
    }
    if teacher_logits is not None:
        teacher_predictions = teacher_logits.argmax(-1)
        scores["eval/teacher_agreement"] = float((predictions == teacher_predictions).double().mean())
        scores["eval/teacher_accuracy"] = accuracy(teacher_predictions, labels)
    return scores


class SequenceClassificationTask(OneLayerStack):
    """Examples are whole sequences; aligned logits are the classifier's (B, C) and targets the labels (B,).

    The task remembers the largest class id of its data (and ``data.labels``) so that :meth:`checked_logits` can refuse
    a model with too few (or, with ``data.labels``, a different number of) output classes before any loss is taken.
    """

    name = "sequence_classification"
    model_class = AutoModelForSequenceClassification
    lora_task_type = "SEQ_CLS"
    data_fields = frozenset({"text_field", "text_pair_field", "label_field", "labels", "mask_probability"})
    headless_logits = False
    pipeline_tag = "text-classification"
    samples_from_prompts = False
    cached_positions = None

    def __init__(self):
        self.largest_label = -1
        self.label_names: list[str] | None = None

    def bind_model(self, model):
        return None

    def load_datasets(self, data, tokenizer, seed):
        train, evaluation = load_classification_datasets(data, tokenizer, seed)
        self.largest_label = max(example["label"] for example in train + (evaluation or []))
        self.label_names = data.labels
        return train, evaluation

    def model_kwargs(self):
        """A fresh classifier head gets one output per class: len(data.labels), else the largest label id + 1; nothing
        before the data is loaded."""
        if self.label_names is not None:
            return {"num_labels": len(self.label_names)}
        return {"num_labels": self.largest_label + 1} if self.largest_label >= 0 else {}

    def collate(self, examples, pad_token_id):
        return collate_classification(examples, pad_token_id)

    def output_logits(self, output, batch) -> torch.Tensor:
        return self.checked_logits(output.logits)

    def align_positions(self, per_token: torch.Tensor) -> torch.Tensor:
        return per_token  # one row per example: nothing to shift

    def checked_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (B, C) unchanged, after checking C against the data's classes."""
        classes = logits.shape[-1]
        if self.label_names is not None and classes != len(self.label_names):
            raise UserError(
                f"the model outputs {classes} classes but data.labels names {len(self.label_names)}; "
                f"set num_labels: {len(self.label_names)} in the model config or fix data.labels"
            )
        if self.largest_label >= classes:
            raise UserError(
                f"the data has label {self.largest_label} but the model outputs only {classes} classes (ids 0..{classes - 1}); "
                f"set num_labels: {self.largest_label + 1} in the model config or fix the labels"
            )
        return logits

    def targets(self, batch):
        labels = batch["labels"]
        return labels, torch.ones_like(labels, dtype=torch.bool)

    def evaluate(self, student, teacher, examples, pad_token_id, batch_size, device):
        labels = torch.tensor([example["label"] for example in examples])
        student_logits = self.checked_logits(predict_logits(student, examples, pad_token_id, batch_size, device))
        teacher_logits = None
        if teacher is not None:
            teacher_logits = self.checked_logits(predict_logits(teacher, examples, pad_token_id, batch_size, device))
        return classification_scores(student_logits, labels, teacher_logits)

    def rollout(self, student, batches, *, tokenizer, sampling, row_seeds):
        raise no_rollout(self.name)
