"""``lmdistill check --config run.yaml [key=value ...]``: the preflight report as a table; exit 2 on an error.

Takes every kind of run config ``lmdistill train`` runs: plain, preset (one report per stage) and label-only
(fine-tuning, no teacher), read by the same :func:`lmdistill.api.load_run_configs`.
"""

from __future__ import annotations

import argparse

from lmdistill.commands.registry import command
from lmdistill.errors import UserError


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config (YAML): plain, preset or fine-tune")
    parser.add_argument("overrides", nargs="*", help="key=value overrides with dotted paths, e.g. data.max_length=512")


@command("check", "check a run config before training (tokenizers, vocab, data, lengths, disk, memory)", _arguments)
def _check(args: argparse.Namespace) -> int:
    from lmdistill.api import load_run_configs
    from lmdistill.preflight import run_preflight

    configs = load_run_configs(args.config, args.overrides)
    first_error = None
    for index, config in enumerate(configs):
        report = run_preflight(config)
        if len(configs) > 1:
            print(f"stage {index + 1} of {len(configs)} ({config.output_dir})")
        print(report.table())
        if report.errors and first_error is None:
            first_error = report.errors[0]
    if first_error is not None:
        raise UserError(f"{first_error.name}: {first_error.message}")
    print("ok: no errors")
    return 0
