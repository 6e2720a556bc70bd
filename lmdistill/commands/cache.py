"""``lmdistill cache``: run a run config's teacher once over its training data into a teacher-signal cache."""

from __future__ import annotations

import argparse

from lmdistill.commands.registry import command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config (YAML) whose teacher and data to cache")
    parser.add_argument("--top-k", type=int, default=32, help="teacher tokens kept per position (the vocabulary size = lossless)")
    parser.add_argument("--output", default=None, help="cache dir (default: <output_dir>/teacher-cache)")
    parser.add_argument("--quantize", choices=["float16", "uint8"], default=None, help="store log-probs smaller (see docs for the error)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides with dotted paths, e.g. data.max_examples=1000")


@command("cache", "run the teacher once and store its top-k log-probs for distillation runs (resumable)", _arguments)
def _cache(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmdistill.cache import build_teacher_cache
    from lmdistill.config import load_config

    config = load_config(args.config, args.overrides)
    output = Path(args.output) if args.output else Path(config.output_dir) / "teacher-cache"
    path = build_teacher_cache(config, output, args.top_k, quantize=args.quantize)
    print(f"teacher cache written to {path}; distil from it with teacher: {{cache: {path}}}")
    return 0
