"""``lmdistill train`` (every kind of run config: plain, preset, label-only), ``finetune``, ``losses``, ``report``."""

from __future__ import annotations

import argparse
import sys

from lmdistill.commands.registry import INTERRUPTED, command, config_arguments, run_arguments
from lmdistill.errors import UserError


def _finished(result, what: str) -> int:
    if result.stopped_early:
        print(f"interrupted after {result.steps} steps (checkpoint saved); continue with --resume", file=sys.stderr)
        return INTERRUPTED
    print(f"finished after {result.steps} steps (loss {result.final_loss:.4f}); {what} saved to {result.student_dir}")
    return 0


@command("train", "distil a teacher into a student as a config says (a `preset:` config runs all its stages; a "
                  "config without teacher fine-tunes on labels)", run_arguments)
def _train(args: argparse.Namespace) -> int:
    from lmdistill.api import distill

    return _finished(distill(args.config, overrides=args.overrides, resume=args.resume), "student")


@command("finetune", "fine-tune a model on labels with plain cross-entropy (e.g. to make a teacher)", run_arguments)
def _finetune(args: argparse.Namespace) -> int:
    from lmdistill.api import finetune

    return _finished(finetune(args.config, overrides=args.overrides, resume=args.resume), "model")


@command("train-preset", "replaced by `lmdistill train` (which runs every stage of a `preset:` config)", config_arguments)
def _train_preset(args: argparse.Namespace) -> int:
    raise UserError(f"`lmdistill train-preset` was replaced by `lmdistill train`, which runs every stage of a preset "
                    f"config; run: lmdistill train --config {args.config}")


@command("losses", "list every registered loss with its parameters", lambda parser: None)
def _losses(args: argparse.Namespace) -> int:
    from lmdistill.losses import names, spec

    for name in names():
        loss = spec(name)
        params = ", ".join(f"{key}={value!r}" for key, value in loss.params.items()) or "-"
        print(f"{name:16s} [{loss.kind}]  params: {params}\n{'':16s} {loss.description}")
    return 0


@command("report", "build the Markdown + HTML report of a run dir", lambda p: p.add_argument("run_dir"))
def _report(args: argparse.Namespace) -> int:
    from lmdistill.report import build_report
    from lmdistill.report.model_card import write_model_card

    markdown, html = build_report(args.run_dir)
    card = write_model_card(args.run_dir)  # the card's evaluation table follows evaluation.json too
    print(f"report: {markdown}\n        {html}" + (f"\ncard:   {card}" if card else ""))
    return 0
