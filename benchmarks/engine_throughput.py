"""Benchmark a distillation training step: lmdistill's engine against TRL's GKDTrainer (lmbda=0), on CPU.

Setups (each in a fresh subprocess, so the peak RSS is its own; memory = peak RSS minus the RSS once models and data
are loaded): (1) ``lmdistill.distill`` with one forward-KL term (T = 1), timed from its metrics.jsonl after the
warm-up steps; (2) TRL ``GKDTrainer`` with lmbda=0 (off-policy), beta=0 (forward KL in TRL's convention:
``F.kl_div(student_log_probs, teacher_log_probs, log_target=True)`` = KL(p_teacher ‖ q_student)), temperature 1,
on the same models, examples, batch size, optimizer settings and steps. The lmdistill subprocess then times the parts
on one batch (teacher forward without grad; plain student step with CE: forward, backward, clip, AdamW) so the
overhead of distillation over its parts is distill / (teacher_fwd + student_step) - 1.

Models: random-init Llama teacher (hidden 256, 8 layers, 4 heads, 2 KV heads), student = 4 of its layers
(weights copied); vocabularies 49,152 and 8,192, both at or above lmdistill's default `train.fused_vocab_threshold`
(8,192), so its logit terms run fused (no logits materialised).
Data: random token ids through a word-level tokenizer of exactly that vocabulary, packed into 128-token blocks.

    .venv/bin/python benchmarks/engine_throughput.py [--write] [--steps 10 --warmup 3 --vocabs 49152 8192]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks_md import replace_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Distillation step throughput"
THREADS = 2
BATCH, SEQ_LEN = 4, 128
LEARNING_RATE = 1e-4
TEACHER = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 8,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": False}
STUDENT_LAYERS = 4


def _proc_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak RSS over a baseline: ``start()`` resets VmHWM to the current RSS, ``stop()`` reads the peak."""

    def __init__(self):
        self.baseline = self.peak = None

    def start(self) -> None:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: resets VmHWM to the current RSS
        self.baseline = _proc_status("VmRSS")

    def stop(self) -> None:
        if self.peak is None:
            self.peak = _proc_status("VmHWM")

    @property
    def over_baseline(self) -> int:
        return self.peak - self.baseline


# ---------------------------------------------------------------- data and config (shared by both setups)

def make_tokenizer_and_data(workdir: Path, vocab: int, documents: int, seed: int = 0) -> tuple[Path, Path]:
    """A word-level tokenizer of exactly ``vocab`` tokens ("<eos>" = 0, "w1".."w{vocab-1}") and a text file whose
    documents are 127 random words each (+ EOS = 128 tokens), so packing gives full 128-token blocks."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<eos>": 0, **{f"w{i}": i for i in range(1, vocab)}}
    core = Tokenizer(models.WordLevel(words, unk_token="<eos>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer_dir = workdir / f"tokenizer-{vocab}"
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>").save_pretrained(tokenizer_dir)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (documents, SEQ_LEN - 1), generator=generator).tolist()
    data = workdir / f"data-{vocab}.txt"
    data.write_text("\n\n".join(" ".join(f"w{i}" for i in row) for row in ids) + "\n")
    return tokenizer_dir, data


def run_config(workdir: Path, vocab: int, steps: int, tokenizer_dir: Path, data: Path):
    from lmdistill.config import parse_config

    return parse_config({
        "output_dir": tempfile.mkdtemp(prefix=f"run-{vocab}-", dir=workdir),  # fresh per process: no checkpoints to resume
        "seed": 0,
        "tokenizer": str(tokenizer_dir),
        "teacher": {"config": {**TEACHER, "vocab_size": vocab}},
        "student": {"from_teacher": {"count": STUDENT_LAYERS}},
        "data": {"train": str(data), "format": "text", "max_length": SEQ_LEN, "pack": True},
        "objective": [{"name": "forward_kl", "weight": 1.0, "temperature": 1.0}],
        "train": {"max_steps": steps, "batch_size": BATCH, "learning_rate": LEARNING_RATE, "warmup_steps": 0,
                  "weight_decay": 0.0, "max_grad_norm": 1.0, "log_every": 1, "progress": False},
    })


def fused_threshold() -> int:
    """lmdistill's default ``train.fused_vocab_threshold``, which the runs here keep."""
    from lmdistill.config import TrainConfig

    return TrainConfig.model_fields["fused_vocab_threshold"].default


def step_times(clock: list[tuple[float, float]], warmup: int) -> dict:
    """Per-step wall and CPU seconds after ``warmup``; ``clock[k]`` = (perf_counter, process_time) at the end of
    optimizer step k+1. CPU time (all threads of the process) is less disturbed by other jobs on the machine."""
    measured = clock[warmup - 1:]
    return {"step_s": [b[0] - a[0] for a, b in zip(measured, measured[1:])],
            "step_cpu_s": [b[1] - a[1] for a, b in zip(measured, measured[1:])]}


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


# ---------------------------------------------------------------- child: lmdistill

def child_lmdistill(args) -> dict:
    from lmdistill import distill
    from lmdistill.data.collate import collate_causal
    from lmdistill.train import checkpoint, loop, run as build
    from lmdistill.train.metrics_log import MetricsLog

    config = run_config(args.workdir, args.vocab, args.warmup + args.steps, args.tokenizer, args.data)
    memory, captured = PeakMemory(), {}
    original_preflight, original_save = build.run_preflight, checkpoint.save_checkpoint

    def preflight_then_baseline(*a, **kw):  # runs once models and data are loaded, just before the optimizer
        report = original_preflight(*a, **kw)
        captured.update(kw)
        memory.start()
        return report

    def peak_then_save(*a, **kw):  # the final checkpoint comes after the last step: it is not part of a step
        memory.stop()
        return original_save(*a, **kw)

    clock: list[tuple[float, float]] = []

    class ClockedMetrics(MetricsLog):  # log_every=1: the loop writes one train record right after each step
        def write(self, record):
            if record.get("split") == "train":
                clock.append(_now())
            super().write(record)

    build.run_preflight, checkpoint.save_checkpoint, loop.MetricsLog = preflight_then_baseline, peak_then_save, ClockedMetrics
    distill(config)
    memory.stop()
    assert len(clock) == config.train.max_steps, (len(clock), config.train.max_steps)
    result = {"setup": "lmdistill", "vocab": args.vocab, **step_times(clock, args.warmup),
              "baseline_rss": memory.baseline, "peak_over_baseline": memory.over_baseline}
    batch = collate_causal(captured["train_examples"][:BATCH], captured["tokenizer"].pad_token_id)
    result["parts"] = time_parts(captured["teacher"], captured["student"], batch, args.warmup, args.steps)
    return result


def time_parts(teacher, student, batch, warmup: int, steps: int) -> dict:
    """Interleaved timings on one batch: teacher forward (no grad, full logits) and a plain student CE step."""
    optimizer = torch.optim.AdamW(student.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    times: dict[str, list[float]] = {"teacher_s": [], "teacher_cpu_s": [], "student_s": [], "student_cpu_s": []}
    student.train()
    for index in range(warmup + steps):
        started = _now()
        with torch.no_grad():
            teacher(**inputs).logits
        middle = _now()
        student(**inputs, labels=batch["labels"]).loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ended = _now()
        if index >= warmup:
            for name, (a, b) in (("teacher", (started, middle)), ("student", (middle, ended))):
                times[f"{name}_s"].append(b[0] - a[0])
                times[f"{name}_cpu_s"].append(b[1] - a[1])
    return times


# ---------------------------------------------------------------- child: TRL GKDTrainer

def child_trl(args) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from lmdistill.data.collate import collate_causal
    from lmdistill.models.loading import load_tokenizer
    from lmdistill.tasks import get_task
    from lmdistill.models.build import build_student, load_teacher

    config = run_config(args.workdir, args.vocab, args.warmup + args.steps, args.tokenizer, args.data)
    tokenizer = load_tokenizer(config.tokenizer)
    teacher = load_teacher(config.teachers[0], model_class=get_task(config.task).model_class, seed=config.seed)  # the same weights lmdistill gets
    student = build_student(config.student, teacher, model_class=get_task(config.task).model_class, seed=config.seed)
    examples, _ = get_task("causal_lm").load_datasets(config.data, tokenizer, config.seed)
    dataset = Dataset.from_list(examples)
    trl_args = GKDConfig(
        output_dir=config.output_dir, max_steps=config.train.max_steps, per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=1, learning_rate=LEARNING_RATE, adam_beta1=0.9, adam_beta2=0.95, adam_epsilon=1e-8,
        weight_decay=0.0, max_grad_norm=1.0, lr_scheduler_type="cosine", warmup_steps=0, optim="adamw_torch",
        lmbda=0.0, beta=0.0, temperature=1.0, seq_kd=False, max_length=SEQ_LEN,
        gradient_checkpointing=False, bf16=False, fp16=False, use_cpu=True, seed=config.seed,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    clock: list[tuple[float, float]] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *a, **kw):
            clock.append(_now())

    trainer = GKDTrainer(model=student, teacher_model=teacher, args=trl_args, train_dataset=dataset, processing_class=tokenizer,
                         data_collator=lambda rows: collate_causal([{k: r[k] for k in ("input_ids", "labels")} for r in rows],
                                                                   tokenizer.pad_token_id),
                         callbacks=[StepClock()])
    memory = PeakMemory()
    memory.start()
    trainer.train()
    memory.stop()
    assert len(clock) == config.train.max_steps, (len(clock), config.train.max_steps)
    return {"setup": "trl", "vocab": args.vocab, **step_times(clock, args.warmup),
            "baseline_rss": memory.baseline, "peak_over_baseline": memory.over_baseline}


# ---------------------------------------------------------------- parent: run, tabulate, write

def run_child_script(script: str, arguments: list[str], what: str) -> tuple[dict, float]:
    """Run ``script`` with ``arguments`` in a fresh process with THREADS threads; the JSON on its last stdout line and
    the seconds the process took. Shared by the benchmarks that time each setup in its own process."""
    command = [sys.executable, str(Path(script).resolve()), *arguments]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(THREADS)}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def child_arguments(setup: str, workdir: Path, tokenizer_dir: Path, data: Path, args) -> list[str]:
    return ["--child", setup, "--workdir", str(workdir), "--tokenizer", str(tokenizer_dir), "--data", str(data),
            "--steps", str(args.steps), "--warmup", str(args.warmup)]


def _run_child(setup: str, vocab: int, workdir: Path, tokenizer_dir: Path, data: Path, args) -> dict:
    result, seconds = run_child_script(__file__, child_arguments(setup, workdir, tokenizer_dir, data, args) + ["--vocab", str(vocab)],
                                       f"{setup} vocab={vocab}")
    print(f"  {setup} vocab={vocab}: median step {statistics.median(result['step_s']):.2f} s, "
          f"peak +{result['peak_over_baseline'] / 2**20:.0f} MiB ({seconds:.0f} s)", file=sys.stderr)
    return result


def _machine() -> tuple[str, str]:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                  if line.startswith("Model name")), "unknown CPU")
    return model, subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f} MiB"


def merge_rounds(results: list[dict]) -> dict[tuple[str, int], dict]:
    """One entry per (setup, vocab): step-time lists concatenated over rounds, the largest peak RSS kept."""
    merged: dict[tuple[str, int], dict] = {}
    for result in results:
        entry = merged.setdefault((result["setup"], result["vocab"]), {"peak_over_baseline": 0, "parts": {}, "rounds": 0})
        entry["rounds"] += 1
        entry["peak_over_baseline"] = max(entry["peak_over_baseline"], result["peak_over_baseline"])
        for key in ("step_s", "step_cpu_s"):
            entry.setdefault(key, []).extend(result[key])
        for key, values in result.get("parts", {}).items():
            entry["parts"].setdefault(key, []).extend(values)
    return merged


def paired_ratios(results: list[dict], vocab: int) -> list[tuple[float, float]]:
    """Per round: (TRL / lmdistill) median step time, wall and CPU."""
    ratios = []
    for round_index in sorted({r["round"] for r in results}):
        pair = {r["setup"]: r for r in results if r["vocab"] == vocab and r["round"] == round_index}
        ratios.append(tuple(statistics.median(pair["trl"][key]) / statistics.median(pair["lmdistill"][key])
                            for key in ("step_s", "step_cpu_s")))
    return ratios


def overhead_over_parts(run: dict) -> dict[str, float]:
    """Median parts (teacher forward, student CE step) and the distill step's overhead over their sum, wall and CPU."""
    median = statistics.median
    parts = {key: median(values) for key, values in run["parts"].items()}
    parts["total_s"] = parts["teacher_s"] + parts["student_s"]
    parts["total_cpu_s"] = parts["teacher_cpu_s"] + parts["student_cpu_s"]
    parts["step_s"], parts["step_cpu_s"] = median(run["step_s"]), median(run["step_cpu_s"])
    parts["overhead"] = parts["step_s"] / parts["total_s"] - 1
    parts["overhead_cpu"] = parts["step_cpu_s"] / parts["total_cpu_s"] - 1
    return parts


def render(results: list[dict], args, cpu: str, uptimes: list[str]) -> str:
    by = merge_rounds(results)
    median = statistics.median
    loads = [float(u.rsplit("load average:", 1)[1].split(",")[0]) for u in uptimes]
    tokens = BATCH * SEQ_LEN
    lines = [SECTION, "",
             f"One distillation optimizer step (forward KL, T = 1), batch {BATCH} x {SEQ_LEN} tokens, float32; per setup "
             f"{args.rounds} round(s) of {args.steps} measured steps after {args.warmup} warm-up steps, each round in a fresh "
             "process, setups alternating order between rounds. Step times are medians over all measured steps; CPU s "
             "is process CPU time (both threads) per step, which other jobs on the machine disturb less than wall time.",
             f"Teacher: random Llama, hidden {TEACHER['hidden_size']}, {TEACHER['num_hidden_layers']} layers, "
             f"{TEACHER['num_attention_heads']} heads ({TEACHER['num_key_value_heads']} KV), MLP {TEACHER['intermediate_size']}, "
             f"untied head; student: {STUDENT_LAYERS} of its layers (weights copied). AdamW (0.9, 0.95), lr {LEARNING_RATE}, clip 1.0. "
             "TRL: `trl.experimental.gkd.GKDTrainer`, lmbda=0, beta=0 (forward KL), temperature 1, no eval/save/logging, "
             "gradient checkpointing and bf16 off.",
             f"Command: `.venv/bin/python benchmarks/engine_throughput.py --write --rounds {args.rounds}`; machine: {cpu}, {THREADS} threads "
             f"(`torch.set_num_threads({THREADS})`), {datetime.date.today().isoformat()}.",
             f"`uptime` before / after: `{uptimes[0]}` / `{uptimes[1]}`."]
    if max(loads) > 1:
        lines.append(f"The machine was shared with other jobs (1-minute load average {min(loads):.1f}-{max(loads):.1f} on 2 cores): "
                     "wall times are inflated and noisy (single steps varied several-fold).")
    lines += ["", "| vocabulary | setup | tokens/s (median step) | step wall s | step CPU s | peak RSS over loaded | "
              "tokens/s vs TRL (pooled) | CPU s vs TRL (pooled) | memory vs TRL |",
              "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for vocab in args.vocabs:
        trl = by[("trl", vocab)]
        for setup, label in (("lmdistill", "lmdistill `distill`" + (" (fused)" if vocab >= fused_threshold() else " (logits)")),
                             ("trl", "TRL `GKDTrainer`")):
            r = by[(setup, vocab)]
            wall, cpu_s = median(r["step_s"]), median(r["step_cpu_s"])
            lines.append(f"| {vocab:,} | {label} | {tokens / wall:.0f} | {wall:.2f} | {cpu_s:.2f} | {_mib(r['peak_over_baseline'])} | "
                         f"{median(trl['step_s']) / wall:.2f}x | {cpu_s / median(trl['step_cpu_s']):.2f}x | "
                         f"{r['peak_over_baseline'] / trl['peak_over_baseline']:.2f}x |")
    lines += ["", "Overhead of distillation over its parts on one batch: teacher forward without grad (full logits) and a plain "
              "student step (HF forward with labels, backward, clip, AdamW), timed interleaved in the lmdistill process right "
              "after its run; medians, seconds per step; overhead = distill / (teacher + student) - 1:", "",
              "| vocabulary | teacher forward wall / CPU | student CE step wall / CPU | sum wall / CPU | distill step wall / CPU | "
              "overhead wall | overhead CPU |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for vocab in args.vocabs:
        p = overhead_over_parts(by[("lmdistill", vocab)])
        lines.append(f"| {vocab:,} | {p['teacher_s']:.2f} / {p['teacher_cpu_s']:.2f} | {p['student_s']:.2f} / "
                     f"{p['student_cpu_s']:.2f} | {p['total_s']:.2f} / {p['total_cpu_s']:.2f} | "
                     f"{p['step_s']:.2f} / {p['step_cpu_s']:.2f} | {p['overhead']:+.0%} | {p['overhead_cpu']:+.0%} |")
    lines += ["", "Speed-ups paired within each round (the two setups ran back to back, so under similar load), "
              "TRL median step / lmdistill median step, wall / CPU:", ""]
    paired = {vocab: paired_ratios(results, vocab) for vocab in args.vocabs}
    for vocab, ratios in paired.items():
        lines.append(f"- vocabulary {vocab:,}: " + ", ".join(f"round {i + 1}: {wall:.2f}x / {cpu_s:.2f}x" for i, (wall, cpu_s) in enumerate(ratios)))
    lines += ["", "Targets (issue): >= 1.3x TRL's tokens/s at no more memory; overhead <= 10%. Speed below = median of the "
              "paired ratios."]
    for vocab in args.vocabs:
        r, trl = by[("lmdistill", vocab)], by[("trl", vocab)]
        speed = median(wall for wall, _ in paired[vocab])
        speed_cpu = median(cpu_s for _, cpu_s in paired[vocab])
        memory = r["peak_over_baseline"] / trl["peak_over_baseline"]
        p = overhead_over_parts(r)
        overhead, overhead_cpu = p["overhead"], p["overhead_cpu"]
        met = speed >= 1.3 and speed_cpu >= 1.3 and memory <= 1.0
        lines.append(f"- vocabulary {vocab:,}: speed {speed:.2f}x wall / {speed_cpu:.2f}x CPU at {memory:.2f}x the memory: "
                     f"**{'met' if met else 'not met'}**; overhead {overhead:+.0%} wall / {overhead_cpu:+.0%} CPU: "
                     f"**{'met' if max(overhead, overhead_cpu) <= 0.10 else 'not met'}**.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace this section of BENCHMARKS.md")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--vocabs", type=int, nargs="+", default=[49152, 8192])
    parser.add_argument("--rounds", type=int, default=2, help="fresh-process runs per setup, alternating the order")
    parser.add_argument("--child", choices=["lmdistill", "trl"])
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--tokenizer", type=Path)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.child:
        result = (child_lmdistill if args.child == "lmdistill" else child_trl)(args)
        print(json.dumps(result))
        return
    cpu, before = _machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="engine-throughput-") as tmp:
        workdir = Path(tmp)
        inputs = {vocab: make_tokenizer_and_data(workdir, vocab, documents=BATCH * (args.warmup + args.steps) + BATCH)
                  for vocab in args.vocabs}
        for round_index in range(args.rounds):
            for vocab in args.vocabs:
                order = ("lmdistill", "trl") if round_index % 2 == 0 else ("trl", "lmdistill")
                for setup in order:
                    results.append({**_run_child(setup, vocab, workdir, *inputs[vocab], args), "round": round_index})
    after = _machine()[1]
    text = render(results, args, cpu, [before, after])
    print(text)
    print(json.dumps(results), file=sys.stderr)
    if args.write:
        replace_section(SECTION, text)


if __name__ == "__main__":
    main()
