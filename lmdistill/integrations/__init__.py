"""Use lmdistill's objective from other training frameworks (Hugging Face ``Trainer``)."""

from lmdistill.integrations.trainer import DistillationTrainer, DistillationTrainingArguments, parse_objective

__all__ = ["DistillationTrainer", "DistillationTrainingArguments", "parse_objective"]
