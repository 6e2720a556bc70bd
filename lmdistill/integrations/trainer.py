"""lmdistill's objective inside a Hugging Face ``Trainer``: same terms, masks, causal shift and loss as the engine.

``DistillationTrainingArguments`` adds an ``objective`` list of term dicts (the run config's YAML form, validated by
:class:`lmdistill.config.TermConfig`); ``DistillationTrainer`` takes the ``teacher_model``, keeps it frozen in eval
mode on the right device, and computes the loss with :mod:`lmdistill.objective`, normalised by the valid
positions of the whole global batch (all accumulation steps and processes), as the engine's loop does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from pydantic import ValidationError
from transformers import Trainer, TrainingArguments

from lmdistill.config import TermConfig
from lmdistill.errors import UserError
from lmdistill.models import capture as attention_capture
from lmdistill.objective import Masks, build_terms, compute_terms, forward_features, needs_of, projection_widths, total_loss
from lmdistill.tasks import TASKS, check_terms, get_task
from lmdistill.teachers.live import DenseTeacherBatch

@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus ``objective``: weighted loss terms, e.g.
    ``[{"name": "forward_kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]``."""

    task: str = field(default="causal_lm", metadata={"help": "a task name (causal_lm, sequence_classification, ...): which logits are distilled."})
    objective: list[dict[str, Any]] = field(
        default_factory=lambda: [{"name": "forward_kl", "weight": 1.0}],
        metadata={"help": "Loss terms as in the run config's `objective`: {name, weight, layers?, ...loss parameters}."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.task not in TASKS:
            raise UserError(f"task {self.task!r} is not known; use one of {', '.join(map(repr, TASKS))}")
        self.objective = [config.model_dump(mode="json") for config in parse_objective(self.objective)]

    @property
    def term_configs(self) -> list[TermConfig]:
        return parse_objective(self.objective)


def parse_objective(objective: Any) -> list[TermConfig]:
    """Validate a list of term dicts (or :class:`TermConfig`); any problem is a one-line :class:`UserError`."""
    if not isinstance(objective, (list, tuple)) or not objective:
        raise UserError("objective must be a non-empty list of terms, e.g. [{'name': 'forward_kl', 'weight': 1.0}]")
    configs = []
    for index, term in enumerate(objective):
        if isinstance(term, TermConfig):
            configs.append(term)
            continue
        if not isinstance(term, Mapping) or "name" not in term:
            raise UserError(f"objective[{index}] must be a dict with a loss `name`, e.g. {{'name': 'ce', 'weight': 1.0}}; got {term!r}")
        try:
            configs.append(TermConfig(**term))
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "term"
            raise UserError(f"objective[{index}] ({term['name']}): {where}: {problem['msg']}") from None
    return configs


class DistillationTrainer(Trainer):
    """A ``Trainer`` whose loss is lmdistill's objective between ``model`` (the student) and ``teacher_model``.

    Batches need ``input_ids``, ``labels`` and optionally ``attention_mask`` and ``token_type_ids``; for ``task="causal_lm"`` labels are
    -100 where not in the loss and position t predicts label t+1, exactly as in the engine. Each term's value is logged as ``loss/<term>``. Hidden-state terms between models of
    different widths learn a projection (``self.projections``), which is trained but not saved with the student.
    """

    # The loss is already normalised by the global batch's valid positions: the Trainer must not divide it again.
    loss_is_scaled_for_ga = True

    def __init__(self, model=None, args: DistillationTrainingArguments | None = None, *, teacher_model: torch.nn.Module, **kwargs):
        if args is None:
            args = DistillationTrainingArguments(output_dir="distill_output")
        if not isinstance(args, DistillationTrainingArguments):
            raise UserError("DistillationTrainer needs DistillationTrainingArguments (TrainingArguments plus `objective`)")
        super().__init__(model=model, args=args, **kwargs)
        student_config, teacher_config = self.model.config, teacher_model.config
        self.task = get_task(args.task)
        check_terms(self.task, args.term_configs)
        self.terms = build_terms(args.term_configs, student_layers=self.task.stack_depths(self.model),
                                 teacher_layers=self.task.stack_depths(teacher_model), stacks=self.task.feature_stacks)
        self.needs = needs_of(self.terms)
        if self.needs.attentions:
            attention_capture.enable_capture(self.model)
            attention_capture.enable_capture(teacher_model)
        widths = projection_widths(self.terms, student_config.hidden_size, teacher_config.hidden_size)
        self.projections = torch.nn.ModuleDict(
            {label: torch.nn.Linear(width_in, width_out, bias=False) for label, (width_in, width_out) in widths.items()}
        ).to(args.device) if widths else None
        teacher_model.requires_grad_(False)
        teacher_model.eval()
        self.teacher_model = self._prepare_teacher(teacher_model)
        self._global_counts: tuple[torch.Tensor, torch.Tensor] | None = None
        self._in_training_step = False
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_steps = 0

    def _prepare_teacher(self, teacher: torch.nn.Module) -> torch.nn.Module:
        if self.is_deepspeed_enabled:
            return _deepspeed_inference_engine(teacher, self.accelerator)
        if self.is_fsdp_enabled:
            return self.accelerator.prepare_model(teacher, evaluation_mode=True)
        return teacher.to(self.args.device)

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model)
        if self.projections is not None:
            known = {id(p) for group in optimizer.param_groups for p in group["params"]}
            missing = [p for p in self.projections.parameters() if id(p) not in known]
            if missing:
                optimizer.add_param_group({"params": missing, "weight_decay": self.args.weight_decay})
        return optimizer

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # One call per optimizer step: count the valid positions of the whole global batch once, as the engine does.
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if batch_samples:
            counts = torch.stack([
                sum(self.task.targets(batch)[1].sum() for batch in batch_samples),
                sum(_attention_mask(batch).sum() for batch in batch_samples),
            ]).float().to(device)
            if self.args.world_size > 1:
                counts = self.accelerator.reduce(counts, reduction="sum")
            self._global_counts = (counts[0], counts[1])
            self._term_steps += 1
        return batch_samples, num_items_in_batch

    def training_step(self, model, inputs, num_items_in_batch=None):
        self._in_training_step = True
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._in_training_step = False

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        if "labels" not in inputs:
            raise UserError("DistillationTrainer batches need `labels`; use the task's collator, e.g. lmdistill.data.collate.collate_causal")
        batch = {**inputs, "attention_mask": _attention_mask(inputs)}  # token_type_ids (BERT pairs) go through too
        training = self._in_training_step and self._global_counts is not None
        targets, loss_mask = self.task.targets(batch)
        loss_count, token_count = self._global_counts if training else (loss_mask.sum().float(), batch["attention_mask"].sum().float())
        progress = self.state.global_step / self.state.max_steps if self.state.max_steps else 0.0
        teacher = DenseTeacherBatch(forward_features(self.teacher_model, batch, self.needs, self.task, grad=False)) if self.needs.teacher else None
        student_features = forward_features(model, batch, self.needs, self.task, grad=torch.is_grad_enabled())
        masks = Masks(loss=loss_mask, tokens=batch["attention_mask"].bool(), loss_count=loss_count, token_count=token_count)
        values = compute_terms(self.terms, student_features, teacher, targets, masks, self.projections, progress)
        loss = total_loss(self.terms, values, progress)
        if training:
            for label, value in values.items():
                self._term_sums[label] = self._term_sums.get(label, 0.0) + value.detach()
            # DDP averages gradients over processes; the global normalisation already divides by everything.
            loss = loss * self.accelerator.num_processes
        return (loss, {"logits": student_features.logits}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._term_sums:
            labels = list(self._term_sums)
            sums = torch.stack([torch.as_tensor(self._term_sums[label], device=self.args.device) for label in labels])
            if self.args.world_size > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            logs.update({f"loss/{label}": value / max(self._term_steps, 1) for label, value in zip(labels, sums.tolist())})
            self._term_sums, self._term_steps = {}, 0
        super().log(logs, start_time)


def _attention_mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    mask = batch.get("attention_mask")
    return torch.ones_like(batch["input_ids"]) if mask is None else mask


def _deepspeed_inference_engine(teacher: torch.nn.Module, accelerator) -> torch.nn.Module:
    """The teacher as a DeepSpeed engine without optimizer: ZeRO-3 shards it like the student; other stages replicate it."""
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    if config.get("zero_optimization", {}).get("stage") != 3:
        config["zero_optimization"] = {"stage": 0}  # stages 1-2 only shard optimizer state, which a teacher has none of
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine
