"""Build the run's models: a frozen teacher, and a student loaded, pruned from the teacher or fresh from a config.

The task decides the model class (``AutoModelForCausalLM``, ``AutoModelForSequenceClassification`` ...) and any
keyword arguments its data implies (e.g. ``num_labels`` for a fresh classifier head); this module knows no task.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from lmdistill.config import RunConfig, StudentConfig, TeacherConfig
from lmdistill.errors import UserError
from lmdistill.models.heads import run_without_head, vocab_size
from lmdistill.models.loading import DTYPES, load_model, model_from_config, resolve_package_path
from lmdistill.models.importance import Calibration, most_important
from lmdistill.models.pruning import choose_layers, seq2seq_layer_lists, seq2seq_student_from_teacher, student_from_teacher
from lmdistill.models.width import prune_width, width_scores

log = logging.getLogger(__name__)


def load_teacher(config: TeacherConfig, *, model_class, seed: int, model_kwargs: dict[str, Any] | None = None) -> torch.nn.Module:
    """A frozen teacher in eval mode: no gradients, no dropout."""
    if config.path is not None:
        teacher = load_model(config.path, model_class=model_class, dtype=config.dtype, what="teacher")
    else:
        teacher = model_from_config(fresh_settings(config.config, model_kwargs), model_class=model_class, dtype=config.dtype, seed=seed)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def build_student(
    config: StudentConfig,
    teacher: torch.nn.Module | None,
    *,
    model_class,
    seed: int,
    lora_task_type: str = "CAUSAL_LM",
    model_kwargs: dict[str, Any] | None = None,
    calibration: Calibration | None = None,
) -> torch.nn.Module:
    """The student: loaded, depth-pruned from the teacher (weights copied), or fresh from a config; in ``config.dtype``.

    ``model_kwargs`` (from the task, e.g. ``num_labels``) size a *fresh* head: they are passed when loading a
    checkpoint that has no head of the model class yet (a bare encoder) and merged into a fresh config.
    ``calibration`` (batches of the run's data) scores layers (``from_teacher.by: importance``) and neurons, heads and
    channels (``from_teacher.width``); what was measured and kept goes into ``calibration.record``.
    """
    if config.path is not None:
        kwargs = model_kwargs if model_kwargs and needs_fresh_head(config.path, model_class) else {}
        student = load_model(config.path, model_class=model_class, dtype=config.dtype, what="student", **kwargs)
        if config.layers is not None:
            student = student_from_teacher(student, choose_layers(student.config.num_hidden_layers, layers=config.layers))
            log.info("student keeps layers %s of %s", config.layers, config.path)
    elif config.from_teacher is not None:
        if teacher is None:
            raise UserError("student.from_teacher needs a live teacher model, not a teacher cache; give student.path")
        choice = config.from_teacher
        if choice.encoder is not None or choice.decoder is not None:
            stacks = seq2seq_layer_lists(teacher)
            keep = {side: choose_layers(len(stacks[side]), **getattr(choice, side).choice(), where=f"from_teacher.{side}")
                    for side in ("encoder", "decoder") if getattr(choice, side) is not None}
            student = seq2seq_student_from_teacher(teacher, keep)
        else:
            keep = kept_teacher_layers(choice, teacher, calibration)
            student = student_from_teacher(teacher, keep)
            if choice.width is not None:
                student = narrowed(student, choice.width, calibration)
        if config.dtype != "auto":
            student = student.to(DTYPES[config.dtype])
        log.info("student keeps teacher layers %s", keep)
    else:
        student = model_from_config(fresh_settings(config.config, model_kwargs), model_class=model_class, dtype=config.dtype, seed=seed + 1)
    if config.freeze_embeddings:
        freeze_embeddings(student)
    if config.lora is not None:
        student = with_lora(student, config.lora, task_type=lora_task_type)
    student.train()
    return student


def freeze_embeddings(model: torch.nn.Module) -> None:
    """Take the input embeddings out of training; an output head tied to them (the same tensor) goes with them."""
    embeddings = model.get_input_embeddings().weight
    embeddings.requires_grad_(False)
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embeddings
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("student embeddings frozen (%s parameters%s); %s parameters train", f"{embeddings.numel():,}",
             ", the tied output head with them" if tied else "", f"{trained:,}")


def kept_teacher_layers(settings, teacher: torch.nn.Module, calibration: Calibration | None) -> list[int]:
    """The teacher layers a ``from_teacher`` student keeps: a fixed choice, or the ``count`` most important."""
    num_layers = teacher.config.num_hidden_layers
    if settings.by == "uniform":
        return choose_layers(num_layers, **settings.choice()) if settings.depth_is_set else list(range(num_layers))
    if calibration is None:
        raise ValueError("from_teacher.by=importance needs calibration batches of the run's data")
    choose_layers(num_layers, count=settings.count)  # UserError when count exceeds the teacher's layers
    scores = calibration.layer_scores(teacher, settings.score)
    keep = most_important(scores, settings.count)
    log.info("layer importance (%s): %s", settings.score, " ".join(f"{i}:{value:.4g}" for i, value in enumerate(scores)))
    calibration.record.update(layer_score=settings.score, layer_scores=scores, kept_layers=keep)
    return keep


def narrowed(student: torch.nn.Module, width, calibration: Calibration | None) -> torch.nn.Module:
    """The student width-pruned to ``width`` by activation importance on the calibration batches."""
    if calibration is None:
        raise ValueError("from_teacher.width needs calibration batches of the run's data")
    before = student.config
    sizes = width.model_dump()
    pruned = prune_width(student, width_scores(student, calibration.batches), **sizes)
    after = pruned.config
    log.info("width pruned: intermediate %d -> %d, kv heads %d -> %d, hidden %d -> %d", before.intermediate_size,
             after.intermediate_size, before.num_key_value_heads, after.num_key_value_heads, before.hidden_size, after.hidden_size)
    calibration.record["width"] = {key: [getattr(before, key), getattr(after, key)]
                                   for key in ("intermediate_size", "num_key_value_heads", "num_attention_heads", "hidden_size")}
    return pruned


def fresh_settings(settings: dict[str, Any], model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """A config dict with the task's keyword arguments filled in where the user did not set them."""
    return {**(model_kwargs or {}), **settings}


def needs_fresh_head(path: str, model_class) -> bool:
    """Whether the checkpoint at ``path`` lacks a head of ``model_class`` (its architectures name another class).

    A hub id or a GGUF file cannot be looked at without loading: those are taken as having their head.
    """
    config_file = Path(resolve_package_path(path)).expanduser() / "config.json"
    if not config_file.is_file():
        return False
    architectures = json.loads(config_file.read_text(encoding="utf-8")).get("architectures") or []
    suffix = model_class.__name__.removeprefix("AutoModel")  # e.g. "ForSequenceClassification"
    return not any(name.endswith(suffix) for name in architectures)


def with_lora(student: torch.nn.Module, lora, *, task_type: str) -> torch.nn.Module:
    """Wrap the student with trainable LoRA adapters (peft); its own weights are frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("student.lora needs peft: pip install 'lmdistill[lora]'") from None
    settings = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                          task_type=task_type)
    model = get_peft_model(student, settings)
    model.lmdistill_merge = lora.merge  # read by the export: merged model dir, or the adapter alone
    return model


def named_tokenizer_source(config: RunConfig) -> str | None:
    """The tokenizer the run's settings name: ``tokenizer``, else the first teacher's path, else the student's path;
    None when none does."""
    if config.tokenizer:
        return config.tokenizer
    for teacher in config.teachers:
        if teacher.path and teacher.tokenizer is None:  # a teacher with its own tokenizer does not lend it
            return teacher.path
    return config.student.path


def tokenizer_source(config: RunConfig, fallback: str | None = None) -> str:
    """Where the run's tokenizer comes from: :func:`named_tokenizer_source`, else ``fallback`` (e.g. the tokenizer a
    teacher cache was built with)."""
    source = named_tokenizer_source(config) or fallback
    if source is None:
        raise UserError("no tokenizer: set `tokenizer:` to a tokenizer dir, hub id or .gguf file (the models come from configs)")
    return source


def check_vocabularies(student: torch.nn.Module, teacher: torch.nn.Module, tokenizer) -> None:
    """Vocabularies may differ by padding rows only: both must cover every token the tokenizer can produce."""
    if student.get_output_embeddings() is None or teacher.get_output_embeddings() is None:
        return
    student_size, teacher_size = vocab_size(student), vocab_size(teacher)
    if student_size == teacher_size:
        return
    if min(student_size, teacher_size) < len(tokenizer):
        raise UserError(
            f"student vocabulary ({student_size}) and teacher vocabulary ({teacher_size}) differ by more than padding "
            f"(the tokenizer has {len(tokenizer)} tokens); distil between models that share a tokenizer"
        )
    log.warning("vocab sizes differ by padding (student %d, teacher %d): distilling over the shared %d tokens",
                student_size, teacher_size, min(student_size, teacher_size))


class StudentBundle(torch.nn.Module):
    """The trained modules together: the student and the learned projections, so one optimizer and DDP cover both."""

    def __init__(self, student: torch.nn.Module, projection_widths: dict[str, tuple[int, int]]):
        super().__init__()
        self.student = student
        self.projections = torch.nn.ModuleDict(
            {label: torch.nn.Linear(width_in, width_out, bias=False) for label, (width_in, width_out) in projection_widths.items()}
        )

    @property
    def _no_split_modules(self) -> list[str] | None:
        """The student's own (its decoder layer classes): FSDP's transformer-based wrapping shards each of them."""
        return getattr(self.student, "_no_split_modules", None)

    def forward(self, without_head: bool = False, **inputs):
        if without_head:  # large vocabularies: the loss applies the lm_head chunk by chunk
            return run_without_head(self.student, **inputs)
        return self.student(**inputs)
