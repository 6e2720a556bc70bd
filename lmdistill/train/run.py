"""``build_run``: everything a run needs, built once before the first step (the loop then only steps it)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from lmdistill.config import RunConfig, dump_config
from lmdistill.errors import UserError
from lmdistill.files import write_atomically
from lmdistill.data.collate import batches_for_epoch
from lmdistill.data.plan import Plan, plan_steps
from lmdistill.models import capture as attention_capture
from lmdistill.models.build import StudentBundle, build_student, check_vocabularies, load_teacher, tokenizer_source
from lmdistill.models.heads import vocab_size
from lmdistill.models.loading import load_tokenizer
from lmdistill.objective import Needs, Term, build_terms, needs_of, projection_widths
from lmdistill.preflight import run_preflight
from lmdistill.tasks import Task, check_config, get_task
from lmdistill.teachers import TeacherSignal, teacher_signal
from lmdistill.train import checkpoint as ckpt
from lmdistill.train.optim import make_optimizer, warmup_cosine
from lmdistill.train.transforms import BatchTransform, MaskInputs, OnPolicySamples

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A built run: models on their device, data, objective, optimizer and schedule, and where it resumes."""

    config: RunConfig
    accelerator: Accelerator
    output_dir: Path
    fingerprint: str
    tokenizer: object
    task: Task
    teacher: TeacherSignal | None  # None: label terms only, no teacher at all
    bundle: torch.nn.Module  # the prepared StudentBundle (student + learned projections)
    headless: bool  # the student gives its last hidden state and head instead of logits (fused large vocabulary)
    terms: list[Term]
    needs: Needs
    transforms: list[BatchTransform]
    train_examples: list[dict]
    eval_examples: list[dict] | None
    plan: Plan
    epoch_order: Callable[[int], list[list[int]]]  # epoch -> global batches of example indices
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start_step: int = 0
    skipped_steps: int = 0

    @property
    def student(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.bundle).student

    @property
    def projections(self) -> torch.nn.ModuleDict:
        return self.accelerator.unwrap_model(self.bundle).projections

    def save(self, step: int) -> Path:
        state = {"step": step, "fingerprint": self.fingerprint, "skipped_steps": self.skipped_steps}
        return ckpt.save_checkpoint(self.accelerator, self.output_dir, step, state, self.config.train.keep_checkpoints)


def build_run(config: RunConfig, *, resume: bool = False) -> Run:
    """Check the config against its task, load tokenizer, data, teacher signal and student, and restore a checkpoint."""
    task = get_task(config.task)
    check_config(task, config)
    accelerator = Accelerator(mixed_precision=config.train.precision, cpu=not torch.cuda.is_available())
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    fingerprint = ckpt.fingerprint(config.model_dump(mode="json", exclude_none=True))
    if accelerator.is_main_process:
        _prepare_output_dir(output_dir, resume)
        write_atomically(output_dir / "config.yaml", dump_config(config))
    accelerator.wait_for_everyone()

    tokenizer = load_tokenizer(tokenizer_source(config))
    train_examples, eval_examples = task.load_datasets(config.data, tokenizer, config.seed)
    models = _load_teachers(config, task)
    source = (models[config.feature_teacher] if config.needs_teacher else models[0]) if models else None
    student = build_student(config.student, source, model_class=task.model_class, seed=config.seed,
                            lora_task_type=task.lora_task_type, model_kwargs=task.model_kwargs())
    task.bind_model(student)
    if not config.needs_teacher:
        models = []  # a label-only run loaded the teacher only to copy layers from it
    for model in models:
        check_vocabularies(student, model, tokenizer)
    feature_model = models[config.feature_teacher] if models else None
    teacher_shape = (feature_model or student).config
    terms = build_terms(config.objective, student_layers=student.config.num_hidden_layers, teacher_layers=teacher_shape.num_hidden_layers)
    needs = needs_of(terms)
    if needs.attentions:
        attention_capture.enable_capture(student)
        attention_capture.enable_capture(feature_model)
    # Large vocabularies: never materialise (tokens x vocab) logits; logit terms run fused from hidden states.
    headless = (needs.logits and task.headless_logits and len(config.teachers) <= 1 and not _has_cache(config)
                and vocab_size(student) >= config.train.fused_vocab_threshold)
    if headless:
        log.info("vocabulary of %d tokens: logit terms use the fused chunked loss", vocab_size(student))
    run_preflight(config, tokenizer=tokenizer, teacher=feature_model, student=student, train_examples=train_examples,
                  device=accelerator.device).raise_for_errors()
    teacher = teacher_signal(config, models, headless=headless, tokenizer=tokenizer, train_examples=train_examples)
    if teacher is not None:
        teacher.check_terms(terms)
    bundle = StudentBundle(student, projection_widths(terms, student.config.hidden_size, teacher_shape.hidden_size))

    train = config.train
    plan = plan_steps(len(train_examples), train.batch_size, train.gradient_accumulation_steps, accelerator.num_processes, train.max_steps, train.epochs)
    optimizer = make_optimizer(bundle, train.learning_rate, train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(plan.total_steps, train.warmup_steps, train.min_learning_rate_ratio))
    # The scheduler stays outside prepare(): accelerate would step it once per process; we step it once per step.
    bundle, optimizer = accelerator.prepare(bundle, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if teacher is not None:
        teacher.to(accelerator.device)
    order = lru_cache(maxsize=1)(lambda epoch: batches_for_epoch(len(train_examples), plan.global_batch, config.seed, epoch))
    run = Run(config, accelerator, output_dir, fingerprint, tokenizer, task, teacher, bundle, headless, terms, needs,
              _transforms(config, task, tokenizer), train_examples, eval_examples, plan, order, optimizer, scheduler)
    latest = ckpt.latest_checkpoint(output_dir) if resume else None
    if latest is not None:
        state = ckpt.load_checkpoint(accelerator, latest, fingerprint)
        run.start_step, run.skipped_steps = state["step"], state.get("skipped_steps", 0)
        log.info("resumed from %s (step %d)", latest, run.start_step)
    return run


def _has_cache(config: RunConfig) -> bool:
    return any(teacher.cache is not None for teacher in config.teachers)


def _load_teachers(config: RunConfig, task: Task) -> list[torch.nn.Module]:
    """The live teacher models the run needs: none for a cache, and none for a label-only run unless the student is
    built from the teacher's layers."""
    if _has_cache(config) or not (config.needs_teacher or config.student.from_teacher is not None):
        return []
    wanted = config.teachers if config.needs_teacher else [config.teachers[config.feature_teacher]]
    # A teacher with fresh weights sizes its head from the data like the student does (e.g. num_labels).
    return [load_teacher(settings, model_class=task.model_class, seed=config.seed, model_kwargs=task.model_kwargs())
            for settings in wanted]


def _transforms(config: RunConfig, task: Task, tokenizer) -> list[BatchTransform]:
    transforms: list[BatchTransform] = []
    if config.data.mask_probability > 0:
        transforms.append(MaskInputs(config.data.mask_probability, tokenizer, config.seed))
    if config.on_policy is not None:
        transforms.append(OnPolicySamples(config.on_policy, task, tokenizer, config.seed))
    return transforms


def _prepare_output_dir(output_dir: Path, resume: bool) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"output_dir {str(output_dir)!r} cannot be written ({error.strerror}); choose a writable directory") from None
    if not resume and ckpt.latest_checkpoint(output_dir) is not None:
        raise UserError(f"{output_dir} already holds checkpoints of a run; pass --resume to continue it or choose a new output_dir")
