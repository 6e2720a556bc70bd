"""`lmdistill eval`: evaluate saved models (and a teacher) on held-out data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmdistill.commands.registry import command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR",
                        help="a model dir to evaluate (repeatable; NAME defaults to student, student2, ...)")
    parser.add_argument("--teacher", help="the teacher dir: adds agreement and KL against it, and speed-ups")
    parser.add_argument("--data", required=True, help="held-out data file (jsonl/json/txt/csv/tsv/parquet)")
    parser.add_argument("--format", default="text", choices=["text", "prompt_completion", "chat"])
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--prompt-field", default="prompt")
    parser.add_argument("--completion-field", default="completion")
    parser.add_argument("--reference-field", help="with prompt data: score greedy generations against this field")
    parser.add_argument("--max-examples", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--output", help="write the results as JSON (the report's evaluation.json format)")


def _named_models(values: list[str]) -> dict[str, str]:
    named = {}
    for index, value in enumerate(values):
        name, _, folder = value.rpartition("=") if "=" in value else ("", "", value)
        named[name or ("student" if index == 0 else f"student{index + 1}")] = folder
    return named


@command("eval", "evaluate models on held-out data: perplexity, agreement with a teacher, size and speed", _arguments)
def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from lmdistill.eval.compare import SUMMARY_COLUMNS, evaluate_model_dirs, summary_rows
    from lmdistill.files import write_atomically

    results = evaluate_model_dirs(
        _named_models(args.model), args.data, teacher=args.teacher, data_format=args.format, text_field=args.text_field,
        prompt_field=args.prompt_field, completion_field=args.completion_field, reference_field=args.reference_field,
        max_examples=args.max_examples, max_length=args.max_length, max_new_tokens=args.max_new_tokens,
    )
    table = Table()
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="right")
    for row in summary_rows(results):
        table.add_row(*row)
    Console().print(table)
    extra = {name: {k: v for k, v in row.items() if k in ("rouge1", "rouge2", "rougeL", "bleu", "chrf")} for name, row in results.items()}
    if any(extra.values()):
        print(json.dumps(extra, indent=2))
    if args.output:
        write_atomically(Path(args.output), json.dumps({"models": results}, indent=2))
        print(f"written to {args.output}")
    return 0
