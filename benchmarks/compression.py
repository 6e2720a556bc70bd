"""Benchmark compression of SmolLM2-135M-Instruct: importance depth/width pruning + distillation vs the CE baseline.

On the demo's data (teacher answers to the first ``--prompts`` of its shipped training prompts, 64 in every table
so far; its 32 held-out prompts' answers are the evaluation text), each student shape
is built with ``lmdistill compress``'s settings (``student.from_teacher`` with ``by: importance`` / ``uniform`` and
``width``: all reachable from a config or the CLI) and trained twice with the same data, steps and schedule: token
KD (forward KL + 0.5 CE) and CE only. Reported per shape: parameters, held-out perplexity untrained and after each
training, top-1 agreement, and decoding speed-up over the teacher (shapes timed in interleaved rounds), over seeds.
Finished runs are cached under the work dir (``results.json``), so the benchmark can be stopped and restarted.

    .venv/bin/python benchmarks/compression.py [--write] [--seeds 0 1 2] [--steps 40] [--prompts 64] [--freeze-embeddings]
        [--work-dir /tmp/lmdistill-compression]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from benchmarks_md import replace_section
from lmdistill.compress import (BASELINE_OBJECTIVE, DISTILLED_OBJECTIVE, CompressSettings, Stages, count_parameters, run_config,
                                teacher_cache)
from lmdistill.config import DataConfig, parse_config
from lmdistill.data.causal import load_causal_datasets
from lmdistill.demo import DemoSettings, prepare_teacher_and_data
from lmdistill.eval.footprint import measure_speeds
from lmdistill.eval.held_out import causal_lm_scores
from lmdistill.models.build import build_student
from lmdistill.models.loading import load_model, load_tokenizer
from lmdistill.tasks import get_task
from lmdistill.tasks.calibration import task_calibration
from lmdistill.train.loop import distill

SECTION = "## Compression"
SHAPES = {  # name -> student.from_teacher
    "24 layers, importance": {"count": 24, "by": "importance"},
    "20 layers, importance": {"count": 20, "by": "importance"},
    "17 layers, importance": {"count": 17, "by": "importance"},  # the demo's student
    "15 layers, importance": {"count": 15, "by": "importance"},
    "15 layers, uniform": {"count": 15, "by": "uniform"},
    # The parameters of the 15-layer students (81.7M vs 81.4M): every layer kept, MLP 1536 -> 864, KV groups 3 -> 1.
    "30 layers, width (MLP 864, 1 KV group)": {"by": "uniform", "width": {"intermediate_size": 864, "num_key_value_heads": 1}},
}


def held_out(work: Path, tokenizer):
    examples, _ = load_causal_datasets(DataConfig(train=str(work / "heldout.jsonl"), format="chat", max_length=256), tokenizer, 0)
    return examples


def untrained_student(work: Path, teacher, plan: dict, tokenizer):
    """The student exactly as the engine builds it before step 1 (calibration on the training data, seed 0)."""
    task = get_task("causal_lm")
    config = parse_config(run_config(CompressSettings(teacher=str(work / "teacher"), train=str(work / "train.jsonl"),
                                                       eval=str(work / "heldout.jsonl"), layers=1), work / "unused", plan,
                                      DISTILLED_OBJECTIVE, {"path": str(work / "teacher")}), source="benchmark")
    examples, _ = task.load_datasets(config.data, tokenizer, config.seed)
    calibration = task_calibration(task, examples, tokenizer.pad_token_id, count=32, batch_size=8, seed=config.seed)
    return build_student(config.student, teacher, model_class=task.model_class, seed=0, calibration=calibration).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="/tmp/lmdistill-compression")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), help="a subset of the shape names")
    parser.add_argument("--prompts", type=int, default=64, help="training prompts of the demo's (64: the tables so far)")
    parser.add_argument("--freeze-embeddings", action="store_true", help="students keep the teacher's embeddings (the demo's default)")
    parser.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = parser.parse_args()
    work = Path(args.work_dir)
    started = time.perf_counter()
    prepare_teacher_and_data(DemoSettings(output_dir=str(work), prompts=args.prompts), work, Stages(2))
    prepared_s = time.perf_counter() - started
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    tokenizer = load_tokenizer(str(work / "teacher"))
    teacher = load_model(str(work / "teacher"), what="teacher").eval()
    examples = held_out(work, tokenizer)
    device = torch.device("cpu")
    teacher_ppl = causal_lm_scores(teacher, None, examples, tokenizer.pad_token_id, 8, device)["perplexity"]
    # KD reads the teacher's top-k from one cache of the training data, as `lmdistill compress` does (shared by shapes and seeds).
    cache_started = time.perf_counter()
    settings = CompressSettings(teacher=str(work / "teacher"), train=str(work / "train.jsonl"), eval=str(work / "heldout.jsonl"), layers=1)
    cache = teacher_cache(settings, work, {"count": 1})
    cache_s = time.perf_counter() - cache_started
    students = {}
    for shape in args.shapes:
        plan = {**SHAPES[shape], "calibration_examples": 32}
        student = untrained_student(work, teacher, plan, tokenizer)
        students[shape] = student
        entry = results.setdefault(shape, {})
        entry["parameters"] = sum(p.numel() for p in student.parameters())
        if "untrained" not in entry:
            entry["untrained"] = causal_lm_scores(student, teacher, examples, tokenizer.pad_token_id, 8, device)
        for seed in args.seeds:
            for method, objective in (("kd", DISTILLED_OBJECTIVE), ("ce", BASELINE_OBJECTIVE)):
                key = f"{method}-{seed}"
                if key in entry:
                    continue
                run_started = time.perf_counter()
                settings = CompressSettings(teacher=str(work / "teacher"), train=str(work / "train.jsonl"), eval=str(work / "heldout.jsonl"),
                                            layers=1, steps=args.steps, learning_rate=args.learning_rate, seed=seed,
                                            freeze_embeddings=args.freeze_embeddings)
                output = work / "runs" / f"{shape.replace(' ', '_').replace(',', '')}-{key}"
                raw = run_config(settings, output, plan, objective, cache if method == "kd" else {"path": str(work / "teacher")})
                raw["train"].update(eval_every=None, progress=False)
                result = distill(parse_config(raw, source="benchmark"))
                trained = load_model(str(result.student_dir), what="student").eval()
                entry[key] = {**causal_lm_scores(trained, teacher, examples, tokenizer.pad_token_id, 8, device),
                              "seconds": time.perf_counter() - run_started}
                results_path.write_text(json.dumps(results, indent=2))
                print(shape, key, f"perplexity {entry[key]['perplexity']:.2f}", flush=True)
        results_path.write_text(json.dumps(results, indent=2))
    speeds = measure_speeds({"teacher": teacher, **students}, torch.tensor([examples[0]["input_ids"][:16]]),
                            torch.tensor([examples[0]["input_ids"][:128]]), rounds=3)
    text = render(args, results, speeds, teacher_ppl, count_parameters(teacher.config), prepared_s, cache_s, time.perf_counter() - started)
    print(text)
    if args.write:
        replace_section(SECTION, text)


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def render(args, results, speeds, teacher_ppl, teacher_params, prepared_s, cache_s, total_s) -> str:
    seeds = args.seeds
    lines = [SECTION, "",
             f"`.venv/bin/python benchmarks/compression.py --write --seeds {' '.join(map(str, seeds))} --steps {args.steps} "
             f"--learning-rate {args.learning_rate} --prompts {args.prompts}{' --freeze-embeddings' if args.freeze_embeddings else ''}`, {date.today()}, {platform.machine()} ({torch.get_num_threads()} torch threads), "
             f"{total_s / 60:.0f} min in all ({prepared_s:.0f} s for the teacher and its pseudo data, {cache_s:.0f} s for its "
             "top-k cache).", "",
             f"SmolLM2-135M-Instruct teacher; its greedy answers to the demo's first {args.prompts} training prompts are the training data and "
             "its answers to the 32 held-out prompts the evaluation text (perplexity over the answer tokens). Each student "
             f"is trained {args.steps} steps of 8 at lr {args.learning_rate}{' with frozen embeddings' if args.freeze_embeddings else ''} twice: KD (forward KL + 0.5 CE, the teacher's "
             f"top-{CompressSettings.cache_top_k} log-probs from a cache, as `lmdistill compress` does) and CE only, "
             f"same data, steps and schedule. Perplexity: mean ± standard deviation over seeds {seeds} (the seed sets the "
             "data order; the pruned student is the same). Decoding speed: greedy tokens/s with the KV cache, 32 new tokens, "
             "shapes timed in 3 interleaved rounds (median).", "",
             f"Teacher: {teacher_params / 1e6:.1f}M parameters, held-out perplexity {teacher_ppl:.2f}.", "",
             "| student | params | decode speed-up | untrained ppl | CE-only ppl | KD ppl | KD top-1 agreement | KD better than CE |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    teacher_speed = speeds["teacher"]["decode_tokens_per_second"]
    for shape, entry in results.items():
        kd = [entry[f"kd-{s}"]["perplexity"] for s in seeds if f"kd-{s}" in entry]
        ce = [entry[f"ce-{s}"]["perplexity"] for s in seeds if f"ce-{s}" in entry]
        agreement = [entry[f"kd-{s}"]["top1_agreement"] for s in seeds if f"kd-{s}" in entry]
        wins = sum(entry[f"kd-{s}"]["perplexity"] < entry[f"ce-{s}"]["perplexity"] for s in seeds if f"kd-{s}" in entry and f"ce-{s}" in entry)
        speed = speeds.get(shape, {}).get("decode_tokens_per_second")
        lines.append(f"| {shape} | {entry['parameters'] / 1e6:.1f}M | {f'{speed / teacher_speed:.2f}x' if speed else '-'} | "
                     f"{entry['untrained']['perplexity']:,.0f} | {_mean_spread(ce) if ce else '-'} | {_mean_spread(kd) if kd else '-'} | "
                     f"{statistics.mean(agreement):.3f} | {wins}/{len(kd)} |" if kd else f"| {shape} | {entry['parameters'] / 1e6:.1f}M | - | - | - | - | - | - |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
