"""`lmdistill compress`: from a teacher and a size target to a distilled student, in one command.

Stages: plan the pruning that reaches the target (layers, a parameter count or a ratio; depth, width or both) ->
cache the teacher's top-k log-probs on the training data in one pass (unless the teacher runs live) -> distil the
pruned student (importance pruning on calibration batches of the training data, then KD) -> train the
same pruned student on the same data, steps and schedule with cross-entropy only (the baseline) -> evaluate
teacher, student and baseline on held-out data, with answers side by side -> report. Every stage prints its
progress and an estimate of its time.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM

from lmdistill.cache import build_teacher_cache
from lmdistill.config import DataFormat, parse_config
from lmdistill.errors import UserError
from lmdistill.eval.compare import SUMMARY_COLUMNS, compare_model_dirs, summary_rows
from lmdistill.files import write_atomically
from lmdistill.models.loading import load_model_config
from lmdistill.report import build_report
from lmdistill.train.loop import distill

console = Console(width=None if sys.stdout.isatty() else 160)  # a log file: whole table cells

DISTILLED_OBJECTIVE = ({"name": "forward_kl", "weight": 1.0, "temperature": 1.0}, {"name": "ce", "weight": 0.5})
BASELINE_OBJECTIVE = ({"name": "ce", "weight": 1.0},)


@dataclass(frozen=True)
class CompressSettings:
    """What ``lmdistill compress`` reads: a teacher, data, a target and the training budget."""

    teacher: str
    train: str
    eval: str
    data_format: DataFormat = "chat"
    output_dir: str = "runs/compress"
    layers: int | None = None  # keep this many layers (depth)
    params: float | None = None  # or reach about this many parameters
    ratio: float | None = None  # or this share of the teacher's parameters
    prune: Literal["depth", "width", "both"] = "depth"
    score: Literal["block_influence", "loss_increase"] = "block_influence"
    calibration_examples: int = 32
    steps: int = 40
    batch_size: int = 8
    learning_rate: float = 6e-4
    max_length: int = 256
    precision: Literal["auto", "no", "bf16"] = "auto"  # both runs alike; auto: bf16 where the device has it natively
    freeze_embeddings: bool = False  # both runs alike: the student's (tied) embeddings keep the teacher's weights
    samples: int = 4  # held-out prompts shown with every model's answer in the report
    # The distilled run reads the teacher's top-k log-probs from a cache built in one pass over the training data
    # (no teacher forward in its steps); None: the live teacher (exact, slower).
    cache_top_k: int | None = 64
    seed: int = 0
    objective: tuple[dict, ...] = DISTILLED_OBJECTIVE
    title: str = "compress"

    def __post_init__(self):
        targets = [name for name in ("layers", "params", "ratio") if getattr(self, name) is not None]
        if len(targets) != 1:
            raise UserError("give one target: --layers K, --params N (e.g. 60M) or --ratio R (e.g. 0.5)")
        if self.ratio is not None and not 0 < self.ratio < 1:
            raise UserError(f"--ratio {self.ratio} must be between 0 and 1 (the share of the teacher's parameters kept)")
        if self.layers is not None and self.prune != "depth":
            raise UserError("--layers is a depth target; use --params or --ratio with --prune width or both")
        if self.cache_top_k is not None and self.cache_top_k < 1:
            raise UserError(f"--cache-top-k {self.cache_top_k} must be at least 1 (or leave the cache out with --live-teacher)")


@dataclass
class CompressResult:
    evaluation: dict[str, dict[str, Any]]
    samples: list[dict[str, str]]
    student_dir: Path
    report: Path
    pruning: dict[str, Any] = field(default_factory=dict)


COMPRESS_STAGES = 6


class Stages:
    """Numbered stage headers with elapsed times, so a long job says where it is and how long each part took."""

    def __init__(self, total: int):
        self.total, self.number, self.started = total, 0, 0.0

    def start(self, title: str, estimate: str | None = None) -> None:
        self.number += 1
        console.rule(f"[bold]{self.number}/{self.total} {title}")
        if estimate:
            console.print(f"estimate: {estimate}")
        self.started = time.perf_counter()

    def done(self, what: str) -> float:
        elapsed = time.perf_counter() - self.started
        console.print(f"[green]done[/] {what} ({elapsed:.0f} s)")
        return elapsed


def count_parameters(config) -> int:
    """Parameters of a causal LM of ``config`` (tied embeddings counted once), without allocating weights."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def plan_pruning(teacher_config, settings: CompressSettings) -> dict[str, Any]:
    """The ``student.from_teacher`` settings that reach the target: depth keeps k layers; width shrinks every layer's
    MLP and KV groups by one factor; both splits the layer budget evenly between the two (sqrt of the ratio each)."""
    layers = teacher_config.num_hidden_layers
    base = {"by": "importance", "score": settings.score, "calibration_examples": settings.calibration_examples}
    if settings.layers is not None:
        if not 1 <= settings.layers <= layers:
            raise UserError(f"--layers {settings.layers}: the teacher has {layers} layers; choose 1..{layers}")
        return {**base, "count": settings.layers}
    total = count_parameters(teacher_config)
    fixed = count_parameters(_with(teacher_config, num_hidden_layers=0))  # embeddings, final norm, head
    target = settings.params if settings.params is not None else settings.ratio * total
    if target >= total:
        raise UserError(f"a target of {target / 1e6:.1f}M parameters is not below the teacher's {total / 1e6:.1f}M; choose a smaller one")
    layer_share = (target - fixed) / (total - fixed)  # of the transformer blocks' parameters
    if layer_share <= 0:
        raise UserError(f"a target of {target / 1e6:.0f}M parameters is below the teacher's embeddings and head "
                        f"({fixed / 1e6:.0f}M); choose a larger target")
    depth_share = {"depth": layer_share, "width": 1.0, "both": math.sqrt(layer_share)}[settings.prune]
    width_share = layer_share / depth_share
    plan = {**base, "count": max(1, min(layers, round(layers * depth_share)))}
    if settings.prune != "depth":
        heads = teacher_config.num_key_value_heads
        plan["width"] = {"intermediate_size": max(8, round(teacher_config.intermediate_size * width_share / 8) * 8),
                         "num_key_value_heads": max(1, round(heads * width_share))}
    return plan


def _with(config, **changes):
    return config.__class__.from_dict({**config.to_dict(), **changes})


def compress(settings: CompressSettings, stages: Stages | None = None) -> CompressResult:
    """Run every stage; the distilled student is ``OUTPUT_DIR/distilled/student``. ``stages`` continues the numbering
    of a caller's own stages (the demo's)."""
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages = stages or Stages(COMPRESS_STAGES)
    stages.start("plan the pruning", "seconds (reads the teacher's config)")
    teacher_config = load_model_config(settings.teacher, what="teacher")
    plan = plan_pruning(teacher_config, settings)
    stages.done(f"{_describe(plan, teacher_config)}")

    live_teacher = {"path": settings.teacher}
    stages.start("teacher signal for the distilled run", "one teacher forward pass over the training data" if settings.cache_top_k else None)
    distilled_teacher = teacher_cache(settings, out, plan) if settings.cache_top_k else live_teacher
    stages.done(f"top-{settings.cache_top_k} cache at {distilled_teacher['cache']}" if settings.cache_top_k else "live teacher (no cache)")

    runs: dict[str, Any] = {}
    estimate = f"{settings.steps} steps; the progress line shows an ETA"
    for name, objective, teacher, title in (
        ("distilled", settings.objective, distilled_teacher,
         "distil: prune by importance, then KD (" + " + ".join(t["name"] for t in settings.objective) + ")"),
        ("baseline", BASELINE_OBJECTIVE, live_teacher, "baseline: the same pruned student, data and steps, cross-entropy only"),
    ):
        stages.start(title, estimate)
        config = parse_config(run_config(settings, out / name, plan, objective, teacher), source=settings.title)
        shutil.rmtree(out / name, ignore_errors=True)
        runs[name] = distill(config)
        if runs[name].stopped_early:  # Ctrl-C: the checkpoint is saved; no later stage runs (the CLI exits 130)
            raise KeyboardInterrupt
        elapsed = stages.done(f"{runs[name].steps} steps, student at {runs[name].student_dir}")
        estimate = f"about {elapsed:.0f} s (the distilled run's time)"

    stages.start("evaluate teacher, distilled student and baseline on held-out data",
                 "a minute or two on a CPU for small models (perplexity, agreement, answers, speed in 3 rounds)")
    comparison = compare_model_dirs({"student": runs["distilled"].student_dir, "baseline": runs["baseline"].student_dir},
                                    settings.eval, teacher=settings.teacher, data_format=settings.data_format,
                                    max_length=settings.max_length, samples=settings.samples, max_new_tokens=48)
    pruning = json.loads((out / "distilled" / "pruning.json").read_text()) if (out / "distilled" / "pruning.json").is_file() else {}
    write_atomically(out / "distilled" / "evaluation.json",
                     json.dumps({"models": comparison.models, "samples": comparison.samples, "pruning": pruning}, indent=2))
    stages.done("evaluation.json written")

    stages.start("report", "seconds")
    _, html = build_report(out / "distilled")
    stages.done(f"report at {html}")
    print_summary(comparison.models, html)
    return CompressResult(comparison.models, comparison.samples, runs["distilled"].student_dir, html, pruning)


def _describe(plan: dict[str, Any], teacher_config) -> str:
    what = f"keep {plan['count']} of {teacher_config.num_hidden_layers} layers by {plan['score']}"
    if "width" in plan:
        width = plan["width"]
        what += (f"; MLP {teacher_config.intermediate_size} -> {width['intermediate_size']}, KV groups "
                 f"{teacher_config.num_key_value_heads} -> {width['num_key_value_heads']}")
    return what


def teacher_cache(settings: CompressSettings, out: Path, plan: dict[str, Any]) -> dict[str, str]:
    """Build the top-``cache_top_k`` teacher cache of the training data under ``out/teacher-cache`` (afresh: the
    data may have changed since a previous run); the distilled run's ``teacher`` setting that reads it."""
    folder = out / "teacher-cache"
    shutil.rmtree(folder, ignore_errors=True)
    raw = run_config(settings, out / "distilled", plan, settings.objective, {"path": settings.teacher})
    build_teacher_cache(parse_config(raw, source=settings.title), folder, settings.cache_top_k)
    return {"cache": str(folder)}


def run_config(settings: CompressSettings, output_dir: Path, plan: dict[str, Any], objective, teacher: dict[str, str]) -> dict[str, Any]:
    """The raw run config of one training stage: the pruned student ``plan`` trained on ``objective`` with ``teacher``
    (a live teacher path, or a cache whose manifest names the model the student is pruned from)."""
    steps = settings.steps
    return {
        "output_dir": str(output_dir),
        "seed": settings.seed,
        "tokenizer": settings.teacher,  # also when the teacher signal is a cache
        "teacher": teacher,
        "student": {"from_teacher": plan, "freeze_embeddings": settings.freeze_embeddings},
        "data": {"train": settings.train, "eval": settings.eval, "format": settings.data_format, "max_length": settings.max_length},
        "objective": [dict(term) for term in objective],
        "train": {"max_steps": steps, "batch_size": settings.batch_size, "learning_rate": settings.learning_rate,
                  "warmup_steps": max(1, steps // 10), "log_every": 1, "eval_every": max(1, steps // 4),
                  "precision": settings.precision},
    }


def print_summary(evaluation: dict[str, dict[str, Any]], report: Path) -> None:
    table = Table(title="teacher vs distilled student vs baseline (held-out data)")
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="right")
    for row in summary_rows(evaluation):
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {report}")
