"""`lmdistill compress`: a teacher and a size target to a distilled, evaluated student."""

from __future__ import annotations

import argparse

from lmdistill.commands.registry import command
from lmdistill.compress import CompressSettings


def parse_count(text: str) -> float:
    """``60M``, ``1.5B``, ``800k`` or a plain number -> a parameter count."""
    scale = {"k": 1e3, "m": 1e6, "b": 1e9}.get(text[-1:].lower(), 1.0)
    digits = text[:-1] if scale != 1.0 else text
    try:
        return float(digits) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a parameter count; write e.g. 60M, 1.5B or 800000") from None


def _arguments(parser: argparse.ArgumentParser) -> None:
    defaults = CompressSettings(teacher="", train="", eval="", layers=1)
    parser.add_argument("--teacher", required=True, help="teacher: a Hugging Face dir, hub id or .gguf file (causal LM)")
    parser.add_argument("--data", required=True, help="training data (jsonl/json/txt/csv/tsv/parquet); also the calibration data")
    parser.add_argument("--eval-data", required=True, help="held-out data for the evaluation and the report")
    parser.add_argument("--format", default=defaults.data_format, choices=["text", "prompt_completion", "chat"])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--layers", type=int, help="keep this many of the teacher's layers (the most important)")
    target.add_argument("--params", type=parse_count, help="reach about this many parameters, e.g. 60M")
    target.add_argument("--ratio", type=float, help="keep this share of the teacher's parameters, e.g. 0.5")
    parser.add_argument("--prune", default=defaults.prune, choices=["depth", "width", "both"],
                        help="depth: drop layers; width: narrow MLPs and KV groups; both: half of the reduction each")
    parser.add_argument("--score", default=defaults.score, choices=["block_influence", "loss_increase"],
                        help="layer importance: block influence (one pass) or loss increase when skipped (one pass per layer)")
    parser.add_argument("--calibration-examples", type=int, default=defaults.calibration_examples)
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps of the distilled run and the baseline")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--max-length", type=int, default=defaults.max_length)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--precision", default=defaults.precision, choices=["auto", "no", "bf16"],
                        help="training precision of both runs; auto (default): bf16 mixed precision where the device "
                             "computes in bfloat16 natively (a GPU, a CPU with AMX or AVX512-BF16), else float32")
    parser.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=defaults.freeze_embeddings,
                        help="keep the student's embeddings (and a head tied to them) at the teacher's weights in both "
                             "runs: fewer trained parameters, which helps on little data")
    teacher = parser.add_mutually_exclusive_group()
    teacher.add_argument("--cache-top-k", type=int, default=defaults.cache_top_k,
                         help="the distilled run reads the teacher's top-k log-probs from a cache built once (default %(default)s)")
    teacher.add_argument("--live-teacher", action="store_true", help="run the teacher in every step instead (exact, slower)")
    parser.add_argument("--output-dir", default=defaults.output_dir)


@command("compress", "prune a teacher by importance to a size target, distil it, and compare it with a CE-only baseline", _arguments)
def _compress(args: argparse.Namespace) -> int:
    from lmdistill.compress import compress

    compress(CompressSettings(
        teacher=args.teacher, train=args.data, eval=args.eval_data, data_format=args.format, output_dir=args.output_dir,
        layers=args.layers, params=args.params, ratio=args.ratio, prune=args.prune, score=args.score,
        calibration_examples=args.calibration_examples, steps=args.steps, batch_size=args.batch_size,
        learning_rate=args.learning_rate, max_length=args.max_length, seed=args.seed, precision=args.precision,
        freeze_embeddings=args.freeze_embeddings, cache_top_k=None if args.live_teacher else args.cache_top_k,
    ))
    return 0
