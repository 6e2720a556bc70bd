"""``lmdistill check --config run.yaml [key=value ...]``: the preflight report as a table; exit 2 on an error.

Takes every kind of run config the CLI runs: plain (``train``), preset (``train-preset``, one report per stage) and
fine-tune (``finetune``, no teacher).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from lmdistill.cli import command
from lmdistill.errors import UserError


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config (YAML): plain, preset or fine-tune")
    parser.add_argument("overrides", nargs="*", help="key=value overrides with dotted paths, e.g. data.max_length=512")


def load_any_config(path: str | Path, overrides: list[str]) -> list:
    """The RunConfig(s) a YAML file stands for: one per preset stage, or the expanded fine-tune config."""
    from lmdistill.config import apply_overrides, load_config
    from lmdistill.finetune import finetune_config
    from lmdistill.presets import load_preset_config

    path = Path(path)
    if not path.is_file():
        return [load_config(path, overrides)]  # its one-line "not found" error
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return [load_config(path, overrides)]  # its one-line YAML / encoding error
    if isinstance(raw, dict) and "preset" in raw:
        return load_preset_config(path, overrides)
    if isinstance(raw, dict) and "teacher" not in raw and isinstance(raw.get("student"), dict):
        raw.pop("num_labels", None)  # a fresh classifier head changes nothing the checks look at
        return [finetune_config(apply_overrides(raw, overrides), source=str(path))]
    return [load_config(path, overrides)]


@command("check", "check a run config before training (tokenizers, vocab, data, lengths, disk, memory)", _arguments)
def _check(args: argparse.Namespace) -> int:
    from lmdistill.preflight import run_preflight

    configs = load_any_config(args.config, args.overrides)
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
