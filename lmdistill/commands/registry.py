"""The subcommand registry: each command module registers ``fn(args) -> exit code`` under its name at import."""

from __future__ import annotations

import argparse
from typing import Callable

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}

# The exit code of a run stopped by SIGINT/SIGTERM after saving its checkpoint (128 + SIGINT, the shell's convention),
# so `lmdistill train && next` does not go on with a half-trained student.
INTERRUPTED = 130


def command(name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register ``fn(args) -> exit code`` as subcommand ``name``."""

    def decorator(fn):
        COMMANDS[name] = (help_text, arguments, fn)
        return fn

    return decorator


def config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config (YAML): plain, preset or label-only (fine-tune)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides with dotted paths, e.g. train.max_steps=3")


def run_arguments(parser: argparse.ArgumentParser) -> None:
    config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir; "
                        "SIGINT/SIGTERM save a checkpoint and exit with code 130")
