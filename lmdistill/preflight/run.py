"""``run_preflight``: load what a run config names (or take what the engine already loaded) and check it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmdistill.cache.manifest import run_tokenizer_source
from lmdistill.config import RunConfig
from lmdistill.errors import UserError
from lmdistill.preflight import checks
from lmdistill.preflight.cross_tokenizer import check_cross_tokenizer, is_cross_tokenizer
from lmdistill.preflight.report import PreflightReport
from lmdistill.preflight.resources import check_memory, check_output_dir, student_parameter_count
from lmdistill.data.plan import plan_steps
from lmdistill.data.readers import SUPPORTED_SUFFIXES, read_records, source_names
from lmdistill.models.build import build_student, load_teacher
from lmdistill.models.loading import load_tokenizer
from lmdistill.tasks import check_config, get_task
from lmdistill.tasks.calibration import task_calibration

NOT_GIVEN: Any = object()  # distinguishes "not loaded yet" from "no teacher model" (a teacher cache)


def offline_status(path: str) -> str | None:
    """Why a model/tokenizer path cannot be checked here, or None when it is a local file or dir.

    A path that does not exist is a hub id (``org/name``) or something an earlier run makes (``runs/x/student``);
    one that looks local (``/``, ``.``, ``~``) and is missing is returned as ``"missing"``.
    """
    if Path(path).expanduser().exists():
        return None
    if path.startswith(("/", ".", "~")):
        return "missing"
    if path.count("/") <= 1:
        return "hub id, not available offline"
    return "not found here; an earlier run or stage makes it"


def run_preflight(
    config: RunConfig,
    *,
    tokenizer: Any = None,
    teacher: Any = NOT_GIVEN,
    student: Any = None,
    train_examples: list[dict] | None = None,
    device: torch.device | None = None,
) -> PreflightReport:
    """Check ``config`` before training; objects already built (the engine passes them) are not loaded again.

    Returns the report; nothing raises for a user problem (each becomes an ``error`` line). ``teacher=None`` means
    the run has no teacher model (a teacher-signal cache).
    """
    report = PreflightReport()
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        task = get_task(config.task)
        check_config(task, config)
    except UserError as error:
        report.error("task", str(error))
        return report
    checks.check_objective(report, config)
    if tokenizer is None:
        tokenizer = _load_tokenizer(report, config)
    data_ok = tokenizer is None or checks.check_chat_template(report, config, tokenizer)
    if train_examples is None and data_ok:
        train_examples = _load_data(report, config, task, tokenizer)
    if teacher is NOT_GIVEN:
        teacher = _load_teacher(report, config, task)
    elif teacher is not None:
        report.ok("teacher", _describe_model(teacher))
    if student is None:
        student = _build_student(report, config, task, teacher, tokenizer, train_examples)
    else:
        report.ok("student", _describe_model(student))
    # A teacher with its own tokenizer shares no ids with the student: its vocabulary is checked by alignment.
    same_vocabulary_teacher = None if is_cross_tokenizer(config) else teacher
    if tokenizer is not None:
        _check_model_tokenizers(report, config, tokenizer)
        if student is not None:
            checks.check_vocab_sizes(report, tokenizer, same_vocabulary_teacher, student)
        if is_cross_tokenizer(config):
            check_cross_tokenizer(report, config, tokenizer, train_examples)
    models = {"student": student, "teacher": same_vocabulary_teacher}
    if train_examples:
        checks.check_token_range(report, train_examples, models)
        checks.check_pad_eos(report, tokenizer, train_examples)
        checks.check_loss_fraction(report, train_examples)
    checks.check_sequence_length(report, config, models, train_examples)
    check_output_dir(report, config, student_parameter_count(student) if student is not None else None)
    if student is not None:
        check_memory(report, config, student, teacher, device)
    return report


def _describe_model(model: Any) -> str:
    shape = model.config
    parameters = student_parameter_count(model)
    return f"{shape.model_type}, {shape.num_hidden_layers} layers, width {shape.hidden_size}, {parameters / 1e6:.2f}M params"


def _load_tokenizer(report: PreflightReport, config: RunConfig) -> Any | None:
    try:
        source = run_tokenizer_source(config)
        status = offline_status(source)
        if status not in (None, "missing"):
            report.warning("tokenizer", f"{source}: not checked ({status})")
            return None
        tokenizer = load_tokenizer(source)
    except UserError as error:
        report.error("tokenizer", str(error))
        return None
    report.ok("tokenizer", f"{source}: {len(tokenizer)} tokens")
    return tokenizer


def _load_teacher(report: PreflightReport, config: RunConfig, task) -> Any | None:
    if not config.teachers:
        report.ok("teacher", "none (label terms only)")
        return None
    first = config.teachers[0]
    if first.cache is not None:
        found = (Path(first.cache) / "manifest.json").is_file()
        (report.ok if found else report.error)(
            "teacher", f"cache {first.cache}" + ("" if found else " has no manifest.json; make it with `lmdistill cache`"))
        return None
    if first.path is not None and offline_status(first.path) not in (None, "missing"):
        report.warning("teacher", f"{first.path}: not checked ({offline_status(first.path)})")
        return None
    try:
        teacher = load_teacher(first, model_class=task.model_class, seed=config.seed, model_kwargs=task.model_kwargs())
    except UserError as error:
        report.error("teacher", str(error))
        return None
    report.ok("teacher", _describe_model(teacher))
    return teacher


def _build_student(report: PreflightReport, config: RunConfig, task, teacher: Any | None, tokenizer: Any | None,
                   train_examples: list[dict] | None) -> Any | None:
    source = config.student
    calibration = None
    if source.from_teacher is not None:
        if teacher is None:
            why = "pruned at train time from the model the teacher cache was built from" if config.teachers[0].cache else "built from the teacher, which was not loaded"
            report.warning("student", f"not checked ({why})")
            return None
        if source.from_teacher.needs_calibration:
            if not train_examples or tokenizer is None:
                report.warning("student", "not checked (pruning by importance needs the training data)")
                return None
            calibration = task_calibration(task, train_examples, tokenizer.pad_token_id, count=source.from_teacher.calibration_examples,
                                           batch_size=config.train.batch_size, seed=config.seed)
    if source.path is not None and offline_status(source.path) not in (None, "missing"):
        report.warning("student", f"{source.path}: not checked ({offline_status(source.path)})")
        return None
    try:
        student = build_student(source, teacher, model_class=task.model_class, seed=config.seed,
                                lora_task_type=task.lora_task_type, model_kwargs=task.model_kwargs(), calibration=calibration)
    except UserError as error:
        report.error("student", str(error))
        return None
    report.ok("student", _describe_model(student))
    return student


def _check_model_tokenizers(report: PreflightReport, config: RunConfig, tokenizer: Any) -> None:
    """Models that ship their own tokenizer must agree with the run's (the teacher's unless `tokenizer:` is set)."""
    source = run_tokenizer_source(config)
    own_tokenizer = config.teachers and config.teachers[0].tokenizer is not None  # checked by alignment instead
    paths = {"student tokenizer": config.student.path,
             "teacher tokenizer": config.teachers[0].path if config.teachers and not own_tokenizer else None}
    for name, path in paths.items():
        if not checks.has_own_tokenizer(path) or Path(path).resolve() == Path(source).expanduser().resolve():
            continue
        try:
            checks.check_tokenizer_match(report, name, tokenizer, load_tokenizer(path), path)
        except UserError as error:
            report.error(name, str(error))


def _load_data(report: PreflightReport, config: RunConfig, task, tokenizer: Any | None) -> list[dict] | None:
    sources = source_names(config.data.train)
    hub = [source for source in sources if _is_hub_dataset(source)]
    if hub:
        report.warning("data", f"{', '.join(hub)}: not checked (`datasets` hub id; check does not download)")
        return None
    try:
        if tokenizer is None:
            records = read_records(config.data.train, dataset_split=config.data.dataset_split, max_examples=config.data.max_examples)
            report.warning("data", f"{len(records)} records read; tokenisation not checked (no tokenizer)")
            return None
        train, evaluation = task.load_datasets(config.data, tokenizer, config.seed)
        if not config.data.streaming:  # a stream's length is unknown; train.max_steps says how much is read
            _check_batch(config, len(train))
    except UserError as error:
        report.error("data", str(error))
        return None
    what = f"streamed, first {len(train)} train examples checked" if config.data.streaming else f"{len(train)} train examples"
    report.ok("data", what + (f", {len(evaluation)} eval" if evaluation else ""))
    return train


def _is_hub_dataset(source: str) -> bool:
    """A `datasets` id such as ``tatsu-lab/alpaca``: not a local path and not named like a data file."""
    named_like_file = any(suffix.lower() in SUPPORTED_SUFFIXES + (".gz",) for suffix in Path(source).suffixes)
    return not Path(source).expanduser().exists() and not named_like_file and offline_status(source) == "hub id, not available offline"


def _check_batch(config: RunConfig, examples: int) -> None:
    plan_steps(examples, config.train.batch_size, config.train.gradient_accumulation_steps, 1, config.train.max_steps, config.train.epochs)
