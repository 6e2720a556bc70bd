"""``lmdistill generate``: sample teacher completions for prompts into a JSONL training file (resumable)."""

from __future__ import annotations

import argparse

from lmdistill.commands.registry import command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="generation config (YAML)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides with dotted paths, e.g. sampling.num_samples=4")


@command("generate", "sample teacher completions for prompts into a JSONL file (sequence-level KD data)", _arguments)
def _generate(args: argparse.Namespace) -> int:
    from lmdistill.data.generate import generate_pseudo_data
    from lmdistill.data.generate_config import load_generate_config

    result = generate_pseudo_data(load_generate_config(args.config, args.overrides))
    print(
        f"{result.output}: {result.written} rows written, {result.filtered} filtered, {result.skipped_existing} already "
        f"done; {result.total_rows} rows in total ({result.total_filtered} filtered)"
    )
    return 0
