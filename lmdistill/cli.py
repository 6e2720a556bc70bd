"""The ``lmdistill`` command: thin argument parsing over the public functions; user errors become one line + exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from lmdistill import __version__
from lmdistill.errors import UserError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register ``fn(args) -> exit code`` as subcommand ``name``."""

    def decorator(fn):
        COMMANDS[name] = (help_text, arguments, fn)
        return fn

    return decorator


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config (YAML)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides with dotted paths, e.g. train.max_steps=3")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    _run_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir; "
                        "SIGINT/SIGTERM save a checkpoint and exit with code 130")


@command("losses", "list every registered loss with its parameters", lambda parser: None)
def _losses(args: argparse.Namespace) -> int:
    from lmdistill.losses import names, spec

    for name in names():
        loss = spec(name)
        params = ", ".join(f"{key}={value!r}" for key, value in loss.params.items()) or "-"
        print(f"{name:16s} [{loss.kind}]  params: {params}\n{'':16s} {loss.description}")
    return 0


@command("train", "distil a teacher into a student as a config says (a `preset:` config runs all its stages)", _train_arguments)
def _train(args: argparse.Namespace) -> int:
    from lmdistill.presets import load_preset_config
    from lmdistill.train.loop import distill

    for config in load_preset_config(args.config, args.overrides):
        result = distill(config, resume=args.resume)
        if result.stopped_early:
            # SIGINT/SIGTERM: checkpoint saved, clean exit, but not finished: 130 so `train && next` does not go on.
            print(f"interrupted after {result.steps} steps (checkpoint saved); continue with --resume", file=sys.stderr)
            return 130
        print(f"finished after {result.steps} steps (loss {result.final_loss:.4f}); student saved to {result.student_dir}")
    return 0


@command("report", "build the Markdown + HTML report of a run dir", lambda p: p.add_argument("run_dir"))
def _report(args: argparse.Namespace) -> int:
    from lmdistill.report import build_report

    markdown, html = build_report(args.run_dir)
    print(f"report: {markdown}\n        {html}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmdistill", description="Knowledge distillation for transformer language models.")
    parser.add_argument("--version", action="version", version=f"lmdistill {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _load_plugins()
    for name, (help_text, arguments, _) in COMMANDS.items():
        arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _load_plugins() -> None:
    """Import the modules that register further subcommands (kept beside the features they expose)."""
    import importlib

    for module in ("lmdistill.commands",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command][2](args)
    except UserError as error:
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
