"""`lmdistill eval`: evaluate saved models (and a teacher) on held-out data."""

from __future__ import annotations

import argparse
import sys
import json
from pathlib import Path

from lmdistill.commands.registry import command
from lmdistill.errors import UserError


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                        help="a model dir to evaluate (repeatable; NAME defaults to student, student2, ...)")
    parser.add_argument("--teacher", help="the teacher dir: adds agreement and KL against it, and speed-ups")
    parser.add_argument("--data", help="held-out data file (jsonl/json/txt/csv/tsv/parquet); optional with --lm-eval")
    parser.add_argument("--format", default="text", choices=["text", "prompt_completion", "chat"])
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--prompt-field", default="prompt")
    parser.add_argument("--completion-field", default="completion")
    parser.add_argument("--reference-field", help="with prompt data: score greedy generations against this field")
    parser.add_argument("--max-examples", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--output", help="write the results as JSON (the report's evaluation.json format)")
    parser.add_argument("--sample-prompts", type=int, default=32, metavar="N",
                        help="each model samples once from the first N held-out prompts: the teacher's NLL of the samples, "
                        "distinct-2 and the share of samples that loop (0: skip)")
    parser.add_argument("--sample-temperature", type=float, default=1.0, help="sampling temperature of those samples")
    parser.add_argument("--sample-top-p", type=float, default=1.0, help="top-p of those samples")
    parser.add_argument("--task", default="causal_lm", choices=["causal_lm", "question_answering", "seq2seq_lm"],
                        help="question_answering: SQuAD-format --data, scored with exact match and F1; seq2seq_lm: "
                        "source/target pairs, generated and scored with BLEU/chrF/TER/ROUGE/METEOR")
    parser.add_argument("--doc-stride", type=int, default=128, help="question_answering: overlap of context windows")
    parser.add_argument("--max-answer-length", type=int, default=30, help="question_answering: longest answer in tokens")
    parser.add_argument("--lm-eval", metavar="TASKS", help="also run lm-evaluation-harness tasks (comma-separated) "
                        "on every model and the teacher; scores go to --output as lm_eval/<task>/<metric>")
    parser.add_argument("--lm-eval-include", metavar="PATH", help="a task YAML or a folder of them (local tasks, e.g. "
                        "examples/lm_eval)")
    parser.add_argument("--lm-eval-limit", type=int, help="at most this many documents per lm-eval task")
    parser.add_argument("--lm-eval-fewshot", type=int, help="few-shot examples per lm-eval prompt (task default)")
    parser.add_argument("--predictions", help="question_answering: write {id: answer} JSON here (NAME.json per model "
                        "when several models are given: FILE's stem + '.' + NAME)")
    # seq2seq_lm
    parser.add_argument("--target-data", help="seq2seq_lm: parallel plain-text targets, line by line with --data (the sources)")
    parser.add_argument("--source-field", default="source", help="seq2seq_lm: the source field of --data records")
    parser.add_argument("--target-field", default="target", help="seq2seq_lm: the target field of --data records")
    parser.add_argument("--source-prefix", default="", help="seq2seq_lm: put before every source, e.g. 'translate English to German: '")
    parser.add_argument("--num-beams", type=int, default=1, help="seq2seq_lm: 1 = greedy, more = beam search")
    parser.add_argument("--outputs", help="seq2seq_lm: write each model's outputs as JSON {name: [text, ...]} here")


def _sampling(args: argparse.Namespace):
    from pydantic import ValidationError

    from lmdistill.config import SamplingConfig

    if args.sample_prompts < 0:
        raise UserError(f"--sample-prompts {args.sample_prompts} is negative; give a count (0 skips the samples)")
    try:
        return SamplingConfig(temperature=args.sample_temperature, top_p=args.sample_top_p, max_new_tokens=args.max_new_tokens)
    except ValidationError:
        raise UserError(f"--sample-temperature must be >= 0 and --sample-top-p in (0, 1]; got {args.sample_temperature} "
                        f"and {args.sample_top_p}") from None


def _named_models(values: list[str]) -> dict[str, str]:
    named = {}
    for index, value in enumerate(values):
        name, _, folder = value.rpartition("=") if "=" in value else ("", "", value)
        named[name or ("student" if index == 0 else f"student{index + 1}")] = folder
    return named


@command("eval", "evaluate models on held-out data: perplexity (or, for QA, EM/F1), agreement with a teacher, size and speed", _arguments)
def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from lmdistill.eval.compare import SUMMARY_COLUMNS, evaluate_model_dirs, summary_rows

    if args.data is None and not args.lm_eval:
        raise UserError("give --data (held-out data to score) or --lm-eval TASKS, or both")
    if args.task == "question_answering":
        if args.data is None or args.lm_eval:
            raise UserError("--task question_answering scores SQuAD-format --data; --lm-eval runs with --task causal_lm")
        return _evaluate_qa(args)
    if args.task == "seq2seq_lm":
        if args.data is None or args.lm_eval:
            raise UserError("--task seq2seq_lm scores source/target --data; --lm-eval runs with --task causal_lm")
        return _evaluate_seq2seq(args)
    models = _named_models(args.model)
    results: dict = {}
    if args.data is not None:
        results = evaluate_model_dirs(
            models, args.data, teacher=args.teacher, data_format=args.format, text_field=args.text_field,
            prompt_field=args.prompt_field, completion_field=args.completion_field, reference_field=args.reference_field,
            max_examples=args.max_examples, max_length=args.max_length, max_new_tokens=args.max_new_tokens,
            sample_prompts=args.sample_prompts, sampling=_sampling(args),
        )
        table = Table()
        for column in SUMMARY_COLUMNS:
            table.add_column(column, justify="right")
        for row in summary_rows(results):
            table.add_row(*row)
        Console(width=None if sys.stdout.isatty() else 160).print(table)  # a log file: whole cells, not 80 columns
    if args.lm_eval:
        _run_harness(args, models, results)
    extra = {name: {k: v for k, v in row.items() if k in ("rouge1", "rouge2", "rougeL", "bleu", "chrf")} for name, row in results.items()}
    if any(extra.values()):
        print(json.dumps(extra, indent=2))
    if args.output:
        _write_output(Path(args.output), results, keep_earlier=bool(args.lm_eval))
    return 0


def _run_harness(args: argparse.Namespace, models: dict[str, str], results: dict) -> None:
    """lm-eval's tasks on the teacher and every model; scores merged into ``results`` and printed as a table."""
    from rich.console import Console
    from rich.table import Table

    from lmdistill.eval.harness import evaluate_with_harness

    tasks = [task.strip() for task in args.lm_eval.split(",") if task.strip()]
    if not tasks:
        raise UserError("--lm-eval needs task names, e.g. --lm-eval hellaswag,arc_easy")
    targets = ({"teacher": args.teacher} if args.teacher else {}) | models
    for name, folder in targets.items():
        scores = evaluate_with_harness(folder, tasks, include_path=args.lm_eval_include, limit=args.lm_eval_limit,
                                       num_fewshot=args.lm_eval_fewshot)
        results.setdefault(name, {}).update(scores)
    keys = sorted({key for row in results.values() for key in row if key.startswith("lm_eval/")})
    table = Table(title="lm-evaluation-harness")
    for column in ["score", *targets]:
        table.add_column(column, justify="right")
    for key in keys:
        table.add_row(key.removeprefix("lm_eval/"), *[f"{results[n][key]:.4f}" if key in results[n] else "-" for n in targets])
    Console().print(table)


def _write_output(path: Path, results: dict, *, keep_earlier: bool) -> None:
    """evaluation.json; with lm-eval scores, merged into an earlier one (its other scores kept). Written into a run
    dir that holds an exported student, the student's model card is refreshed with the scores."""
    from lmdistill.files import write_atomically
    from lmdistill.report.model_card import write_model_card

    models = results
    if keep_earlier and path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8")).get("models", {})
        except (ValueError, AttributeError):
            raise UserError(f"{path} is not an evaluation.json to add lm-eval scores to; choose another --output") from None
        models = {name: {**earlier.get(name, {}), **results.get(name, {})} for name in {**earlier, **results}}
    write_atomically(path, json.dumps({"models": models}, indent=2))
    print(f"written to {path}")
    if (path.parent / "student").is_dir() and (path.parent / "metrics.jsonl").is_file():
        print(f"model card updated: {write_model_card(path.parent)}")


QA_COLUMNS = ("model", "layers", "params", "exact match", "F1", "F1 vs teacher", "CPU ms/question")


def _evaluate_qa(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from lmdistill.eval.qa_runner import evaluate_qa_dirs
    from lmdistill.files import write_atomically

    models = _named_models(args.model)
    scores, predictions = evaluate_qa_dirs(models, args.data, teacher=args.teacher, max_examples=args.max_examples,
                                           max_length=args.max_length, doc_stride=args.doc_stride,
                                           max_answer_length=args.max_answer_length)
    table = Table()
    for column in QA_COLUMNS:
        table.add_column(column, justify="right")
    for name, row in scores.items():
        agreement = f"{row['teacher_f1_agreement']:.2f}" if "teacher_f1_agreement" in row else "-"
        table.add_row(name, str(row["layers"]), f"{row['parameters'] / 1e6:.1f}M", f"{row['exact_match']:.2f}",
                      f"{row['f1']:.2f}", agreement, f"{row['latency_ms_per_question']:.1f}")
    Console().print(table)
    if args.predictions:
        target = Path(args.predictions)
        written = [name for name in scores if name in models or len(scores) == 1]
        for name in written:
            path = target if len(written) == 1 else target.with_name(f"{target.stem}.{name}{target.suffix or '.json'}")
            write_atomically(path, json.dumps(predictions[name], indent=1, ensure_ascii=False))
            print(f"predictions of {name} written to {path}")
    if args.output:
        write_atomically(Path(args.output), json.dumps({"models": scores}, indent=2))
        print(f"written to {args.output}")
    return 0


SEQ2SEQ_COLUMNS = ("model", "layers", "params", "BLEU", "chrF", "TER", "ROUGE-1", "ROUGE-2", "ROUGE-L", "METEOR",
                   "perplexity", "top-1 agree", "BLEU vs teacher", "ms/sentence", "speed-up")


def _evaluate_seq2seq(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from lmdistill.config import ParallelFiles
    from lmdistill.eval.meteor import MISSING
    from lmdistill.eval.seq2seq_runner import evaluate_seq2seq_dirs
    from lmdistill.files import write_atomically

    data = ParallelFiles(source=args.data, target=args.target_data) if args.target_data else args.data
    scores, outputs = evaluate_seq2seq_dirs(
        _named_models(args.model), data, teacher=args.teacher, source_field=args.source_field, target_field=args.target_field,
        source_prefix=args.source_prefix, max_examples=args.max_examples, max_length=args.max_length,
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
    table = Table(title=f"{'greedy' if args.num_beams == 1 else f'beam {args.num_beams}'} decoding")
    for column in SEQ2SEQ_COLUMNS:
        table.add_column(column, justify="right")

    def shown(row, key, scale=1.0, digits=2):
        return "-" if row.get(key) is None else f"{row[key] * scale:.{digits}f}"

    for name, row in scores.items():
        table.add_row(name, row["layers"], f"{row['parameters'] / 1e6:.1f}M", shown(row, "bleu"), shown(row, "chrf"),
                      shown(row, "ter"), shown(row, "rouge1", 100), shown(row, "rouge2", 100), shown(row, "rougeL", 100),
                      shown(row, "meteor", 100), shown(row, "perplexity"), shown(row, "top1_agreement", digits=3),
                      shown(row, "bleu_vs_teacher"), shown(row, "ms_per_sentence", digits=1),
                      "-" if "speedup" not in row else f"{row['speedup']:.2f}x")
    Console(width=200).print(table)  # 15 columns: wider than a default 80-column pipe
    if any(row["meteor"] is None for row in scores.values()):
        print(MISSING)
    if args.outputs:
        write_atomically(Path(args.outputs), json.dumps(outputs, indent=1, ensure_ascii=False))
        print(f"outputs written to {args.outputs}")
    if args.output:
        write_atomically(Path(args.output), json.dumps({"models": scores}, indent=2))
        print(f"written to {args.output}")
    return 0
