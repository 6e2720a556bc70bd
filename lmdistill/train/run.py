"""``build_run``: everything a run needs, built once before the first step (the loop then only steps it)."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from lmdistill.cache.manifest import read_manifest, run_tokenizer_source
from lmdistill.config import RunConfig, TeacherConfig, dump_config
from lmdistill.errors import UserError
from lmdistill.files import write_atomically
from lmdistill.data.order import ExampleOrder, TrainBatches
from lmdistill.data.plan import Plan, plan_steps
from lmdistill.data.streaming import StreamedBatches
from lmdistill.models import capture as attention_capture
from lmdistill.models.build import StudentBundle, build_student, check_vocabularies, load_teacher
from lmdistill.models.heads import vocab_size
from lmdistill.models.loading import load_tokenizer
from lmdistill.objective import Needs, Term, build_terms, needs_of, projection_widths
from lmdistill.preflight import run_preflight
from lmdistill.report.publish import hub_token
from lmdistill.tasks import Task, check_config, get_task
from lmdistill.tasks.calibration import task_calibration
from lmdistill.teachers import TeacherSignal, teacher_signal
from lmdistill.version import __version__
from lmdistill.train import checkpoint as ckpt
from lmdistill.train.distributed import allow_precision, check_sharding_supports, shard_on_cpu_if_configured
from lmdistill.train.optim import make_optimizer, warmup_cosine
from lmdistill.train.precision import resolve_precision
from lmdistill.train.trackers import tracker_targets
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
    batches: TrainBatches  # step -> the global batch's example ids and examples
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    start_step: int = 0
    skipped_steps: int = 0
    tokens_trained: int = 0  # real tokens of every step so far, across resumes (the model card reports it)

    @property
    def student(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.bundle).student

    @property
    def projections(self) -> torch.nn.ModuleDict:
        return self.accelerator.unwrap_model(self.bundle).projections

    def save(self, step: int) -> Path:
        state = {"step": step, "fingerprint": self.fingerprint, "skipped_steps": self.skipped_steps,
                 "tokens_trained": self.tokens_trained}
        position = self.batches.position(step)
        if position is not None:
            state["data_position"] = position
        return ckpt.save_checkpoint(self.accelerator, self.output_dir, step, state, self.config.train.keep_checkpoints)


def build_run(config: RunConfig, *, resume: bool = False) -> Run:
    """Check the config against its task, load tokenizer, data, teacher signal and student, and restore a checkpoint."""
    task = get_task(config.task)
    check_config(task, config)
    output_dir = Path(config.output_dir)
    latest = ckpt.latest_checkpoint(output_dir) if resume else None
    resume_step = ckpt.step_of(latest) if latest is not None else 0
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(config.train.precision, device_type)
    if config.train.precision == "auto":
        log.info("train.precision auto: %s on this %s", "bf16 mixed precision" if precision == "bf16" else "float32",
                 device_type.upper())
    allow_precision(precision)
    accelerator = Accelerator(mixed_precision=precision, cpu=device_type == "cpu",
                              log_with=tracker_targets(config.train.report_to, output_dir, resume_step) or None,
                              project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir)))
    shard_on_cpu_if_configured(accelerator)
    check_sharding_supports(accelerator, samples_in_training=config.on_policy is not None,
                            samples_in_eval=config.train.eval_samples > 0)
    set_seed(config.seed)
    fingerprint = ckpt.fingerprint(config.model_dump(mode="json", exclude_none=True))
    if accelerator.is_main_process:
        _prepare_output_dir(output_dir, resume)
        write_atomically(output_dir / "config.yaml", dump_config(config))
        _write_run_info(output_dir, task, resume)
    accelerator.wait_for_everyone()
    if config.output is not None and config.output.push_to_hub:
        hub_token()  # a run that will publish fails now (on every process alike), not after training

    tokenizer = load_tokenizer(run_tokenizer_source(config))
    train_examples, eval_examples = task.load_datasets(config.data, tokenizer, config.seed)
    models = _load_teachers(config, task)
    source = (models[config.feature_teacher] if config.needs_teacher else models[0]) if models else None
    if source is None and config.student.from_teacher is not None and _has_cache(config):
        source = _cached_teachers_model(config, task)  # loaded once to prune, then dropped
    calibration = _calibration(config, task, tokenizer, train_examples)
    student = build_student(config.student, source, model_class=task.model_class, seed=config.seed,
                            lora_task_type=task.lora_task_type, model_kwargs=task.model_kwargs(), calibration=calibration)
    task.bind_model(student)
    if calibration is not None and accelerator.is_main_process:
        write_atomically(output_dir / "pruning.json", json.dumps(calibration.record, indent=2))
    if not config.needs_teacher or _has_cache(config):
        models = []  # loaded only to copy layers from (a label-only run, or a teacher cache)
    cross_tokenizer = any(settings.tokenizer is not None for settings in config.teachers)
    for model in models if not cross_tokenizer else []:  # another tokenizer: alignment by text, not by ids
        check_vocabularies(student, model, tokenizer)
    feature_model = models[config.feature_teacher] if models else None
    teacher_shape = (feature_model or student).config
    terms = build_terms(config.objective, student_layers=task.stack_depths(student),
                        teacher_layers=task.stack_depths(feature_model or student), stacks=task.feature_stacks)
    needs = needs_of(terms)
    if needs.attentions:
        attention_capture.enable_capture(student)
        attention_capture.enable_capture(feature_model)
    # Large vocabularies: never materialise (tokens x vocab) logits; logit terms run fused from hidden states (a
    # cache: the student's head runs at the loss positions only).
    headless = (needs.logits and task.headless_logits and len(config.teachers) <= 1
                and not cross_tokenizer and vocab_size(student) >= config.train.fused_vocab_threshold)
    if headless:
        log.info("vocabulary of %d tokens: logit terms use the %s", vocab_size(student),
                 "student's head at the loss positions only" if _has_cache(config) else "fused chunked loss")
    run_preflight(config, tokenizer=tokenizer, teacher=feature_model, student=student, train_examples=train_examples,
                  device=accelerator.device).raise_for_errors()
    teacher = teacher_signal(config, models, headless=headless, tokenizer=tokenizer, train_examples=train_examples)
    if teacher is not None:
        teacher.check_terms(terms)
    bundle = StudentBundle(student, projection_widths(terms, student.config.hidden_size, teacher_shape.hidden_size))

    train = config.train
    plan, batches = _train_batches(config, task, tokenizer, train_examples, accelerator.num_processes)
    optimizer = make_optimizer(bundle, train.learning_rate, train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(plan.total_steps, train.warmup_steps, train.min_learning_rate_ratio))
    # The scheduler stays outside prepare(): accelerate would step it once per process; we step it once per step.
    bundle, optimizer = accelerator.prepare(bundle, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    if teacher is not None:
        teacher.to(accelerator.device)
    run = Run(config, accelerator, output_dir, fingerprint, tokenizer, task, teacher, bundle, headless, terms, needs,
              _transforms(config, task, tokenizer), train_examples, eval_examples, plan, batches, optimizer, scheduler)
    if latest is not None:
        state = ckpt.load_checkpoint(accelerator, latest, fingerprint)
        run.start_step, run.skipped_steps = state["step"], state.get("skipped_steps", 0)
        run.tokens_trained = state.get("tokens_trained", 0)
        run.batches.restore(state.get("data_position"), run.start_step)
        log.info("resumed from %s (step %d)", latest, run.start_step)
    return run


def _train_batches(config: RunConfig, task: Task, tokenizer, train_examples: list[dict], processes: int) -> tuple[Plan, TrainBatches]:
    """The run's plan and where its global batches come from: the examples in memory, or the streamed corpus
    (``train_examples`` is then only its first examples, which preflight checked)."""
    train = config.train
    if config.data.streaming:
        global_batch = train.batch_size * train.gradient_accumulation_steps * processes
        plan = Plan(total_steps=train.max_steps, steps_per_epoch=train.max_steps, global_batch=global_batch)
        return plan, StreamedBatches(task.stream_train(config.data, tokenizer), global_batch)
    plan = plan_steps(len(train_examples), train.batch_size, train.gradient_accumulation_steps, processes, train.max_steps, train.epochs)
    return plan, ExampleOrder(train_examples, plan, config.seed)


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


def _cached_teachers_model(config: RunConfig, task: Task) -> torch.nn.Module:
    """The model a teacher cache was built from (its manifest records the path), for a student pruned from it."""
    cache = config.teachers[0].cache
    recorded = read_manifest(Path(cache))["teacher"]
    if recorded.get("path") is None:
        raise UserError(f"teacher cache {cache} was built from a teacher config, not a model path, so student.from_teacher "
                        "cannot load it; give student.path (a pruned model dir) instead")
    settings = TeacherConfig(path=recorded["path"], dtype=recorded.get("dtype", "float32"))
    return load_teacher(settings, model_class=task.model_class, seed=config.seed, model_kwargs=task.model_kwargs())


def _calibration(config: RunConfig, task: Task, tokenizer, train_examples: list[dict]):
    """Calibration batches of the training data when the student is pruned by importance; None otherwise."""
    settings = config.student.from_teacher
    if settings is None or not settings.needs_calibration:
        return None
    calibration = task_calibration(task, train_examples, tokenizer.pad_token_id, count=settings.calibration_examples,
                                   batch_size=config.train.batch_size, seed=config.seed)
    calibration.record["calibration_examples"] = min(settings.calibration_examples, len(train_examples))
    return calibration


def _transforms(config: RunConfig, task: Task, tokenizer) -> list[BatchTransform]:
    transforms: list[BatchTransform] = []
    if config.data.mask_probability > 0:
        transforms.append(MaskInputs(config.data.mask_probability, tokenizer, config.seed))
    if config.on_policy is not None:
        transforms.append(OnPolicySamples(config.on_policy, task, tokenizer, config.seed))
    return transforms


RUN_INFO = "run_info.json"


def _write_run_info(output_dir: Path, task: Task, resume: bool) -> None:
    """``run_info.json``: the command that started the run, the lmdistill version and the task's pipeline tag (what
    the model card states). A resumed run keeps the command that started it."""
    path = output_dir / RUN_INFO
    if resume and path.is_file():
        return
    command = shlex.join(["lmdistill" if sys.argv[0].endswith(("lmdistill", "__main__.py")) else sys.argv[0], *sys.argv[1:]])
    info = {"command": command, "lmdistill_version": __version__, "task": task.name, "pipeline_tag": task.pipeline_tag}
    write_atomically(path, json.dumps(info, indent=2))


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
