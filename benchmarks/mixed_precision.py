"""Benchmark `train.precision`: a bf16 mixed-precision distillation step against the float32 step, side by side.

The demo's shapes on random weights: a teacher of SmolLM2-135M's shape (hidden 576, 30 layers, 9 heads / 3 KV, MLP
1536, 49,152-token tied vocabulary) and a student of 18 of its layers (weights copied), trained with the demo's
objective (forward KL, T = 1, + 0.5 CE) from the live teacher, batch 8 x 128 tokens. Each setup runs in a fresh
process per round, the order alternating between rounds; step times come from the run's own clock (one train record
per step) after the warm-up steps. Also reported: the loss both reach on the same batches (bf16 changes the numerics,
not the optimisation), and what ``precision: auto`` resolves to on this machine.

    .venv/bin/python benchmarks/mixed_precision.py [--write] [--rounds 2 --steps 6 --warmup 2]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks_md import replace_section
from engine_throughput import THREADS, _machine, _now, child_arguments, make_tokenizer_and_data, run_child_script, step_times

SECTION = "## Mixed-precision step time"
BATCH, SEQ_LEN, VOCAB = 8, 128, 49152
TEACHER = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
           "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 2048,
           "tie_word_embeddings": True, "vocab_size": VOCAB}
STUDENT_LAYERS = 18
OBJECTIVE = [{"name": "forward_kl", "weight": 1.0, "temperature": 1.0}, {"name": "ce", "weight": 0.5}]
SETUPS = {"no": "float32", "bf16": "bf16 autocast"}


def child(args) -> dict:
    from lmdistill import distill
    from lmdistill.config import parse_config
    from lmdistill.train import loop
    from lmdistill.train.metrics_log import MetricsLog

    config = parse_config({
        "output_dir": tempfile.mkdtemp(prefix=f"run-{args.child}-", dir=args.workdir),
        "seed": 0, "tokenizer": str(args.tokenizer),
        "teacher": {"config": TEACHER},
        "student": {"from_teacher": {"count": STUDENT_LAYERS}},
        "data": {"train": str(args.data), "format": "text", "max_length": SEQ_LEN, "pack": True},
        "objective": OBJECTIVE,
        "train": {"max_steps": args.warmup + args.steps, "batch_size": BATCH, "learning_rate": 3e-4, "log_every": 1,
                  "progress": False, "report_to": [], "precision": args.child},
    })
    clock: list[tuple[float, float]] = []
    losses: list[float] = []

    class ClockedMetrics(MetricsLog):  # log_every=1: the loop writes one train record right after each step
        def write(self, record):
            if record.get("split") == "train":
                clock.append(_now())
                losses.append(record["loss"])
            super().write(record)

    loop.MetricsLog = ClockedMetrics
    distill(config)
    assert len(clock) == config.train.max_steps, (len(clock), config.train.max_steps)
    return {"setup": args.child, **step_times(clock, args.warmup), "losses": losses}


def run_child(setup: str, workdir: Path, tokenizer_dir: Path, data: Path, args) -> dict:
    result, seconds = run_child_script(__file__, child_arguments(setup, workdir, tokenizer_dir, data, args), SETUPS[setup])
    print(f"  {SETUPS[setup]}: median step {statistics.median(result['step_s']):.2f} s ({seconds:.0f} s)", file=sys.stderr)
    return result


def paired_ratios(results: list[dict]) -> list[tuple[float, float]]:
    """Per round: bf16 median step / float32 median step, wall and CPU."""
    ratios = []
    for round_index in sorted({r["round"] for r in results}):
        pair = {r["setup"]: r for r in results if r["round"] == round_index}
        ratios.append(tuple(statistics.median(pair["bf16"][key]) / statistics.median(pair["no"][key])
                            for key in ("step_s", "step_cpu_s")))
    return ratios


def render(results: list[dict], args, cpu: str, uptimes: list[str], auto: str, bf16_hardware: str) -> str:
    median = statistics.median
    lines = [SECTION, "",
             f"One distillation optimizer step of the demo's shapes on random weights: teacher of SmolLM2-135M's shape "
             f"(hidden {TEACHER['hidden_size']}, {TEACHER['num_hidden_layers']} layers, {TEACHER['num_attention_heads']} "
             f"heads / {TEACHER['num_key_value_heads']} KV, MLP {TEACHER['intermediate_size']}, tied {VOCAB:,}-token "
             f"vocabulary), student {STUDENT_LAYERS} of its layers, forward KL (T = 1) + 0.5 CE from the live teacher, "
             f"batch {BATCH} x {SEQ_LEN} tokens, AdamW lr 3e-4. Per setup {args.rounds} round(s) of {args.steps} measured "
             f"steps after {args.warmup} warm-up steps, each in a fresh process, the order alternating between rounds; "
             "medians over all measured steps. Weights and optimizer state stay float32 in both; bf16 autocasts the "
             "matmuls (accelerate's `mixed_precision`).",
             f"Command: `.venv/bin/python benchmarks/mixed_precision.py --write --rounds {args.rounds} --steps {args.steps} "
             f"--warmup {args.warmup}`; machine: {cpu} ({bf16_hardware}), {THREADS} threads, {datetime.date.today().isoformat()}; "
             f"`precision: auto` resolves to `{auto}` here.",
             f"`uptime` before / after: `{uptimes[0]}` / `{uptimes[1]}` (the benchmark's own {THREADS} threads load the "
             "machine by about 2; more means other jobs ran beside it, and the paired ratios below, setups run back to "
             "back, are the figures to compare)."]
    lines += ["", "| setup | tokens/s (median step) | step wall s | step CPU s | loss at the last step |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for setup, label in SETUPS.items():
        runs = [r for r in results if r["setup"] == setup]
        wall = median(s for r in runs for s in r["step_s"])
        cpu_s = median(s for r in runs for s in r["step_cpu_s"])
        last = ", ".join(f"{r['losses'][-1]:.4f}" for r in runs)
        lines.append(f"| {label} | {BATCH * SEQ_LEN / wall:.0f} | {wall:.2f} | {cpu_s:.2f} | {last} |")
    ratios = paired_ratios(results)
    lines += ["", "bf16 step time / float32 step time, paired within each round (wall / CPU): "
              + ", ".join(f"round {i + 1}: {wall:.2f}x / {cpu_s:.2f}x" for i, (wall, cpu_s) in enumerate(ratios))
              + f"; median {median(w for w, _ in ratios):.2f}x / {median(c for _, c in ratios):.2f}x."]
    return "\n".join(lines) + "\n"


def bf16_hardware() -> str:
    flags = {"AMX-BF16": torch.cpu._is_amx_tile_supported(), "AVX512-BF16": torch.cpu._is_avx512_bf16_supported()}
    found = [name for name, present in flags.items() if present]
    return ", ".join(found) if found else "no bf16 instructions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace this section of BENCHMARKS.md")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="fresh-process runs per setup, alternating the order")
    parser.add_argument("--child", choices=sorted(SETUPS))
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.child:
        print(json.dumps(child(args)))
        return
    from lmdistill.train.precision import resolve_precision

    cpu, before = _machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="mixed-precision-") as tmp:
        workdir = Path(tmp)
        tokenizer_dir, data = make_tokenizer_and_data(workdir, VOCAB, documents=BATCH * (args.warmup + args.steps) + BATCH)
        for round_index in range(args.rounds):
            order = list(SETUPS) if round_index % 2 == 0 else list(SETUPS)[::-1]
            for setup in order:
                results.append({**run_child(setup, workdir, tokenizer_dir, data, args), "round": round_index})
    after = _machine()[1]
    text = render(results, args, cpu, [before, after], resolve_precision("auto", "cpu"), bf16_hardware())
    print(text)
    print(json.dumps(results), file=sys.stderr)
    if args.write:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
