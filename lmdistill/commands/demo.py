"""`lmdistill demo`: the embedded end-to-end example."""

from __future__ import annotations

import argparse

from lmdistill.commands.registry import command
from lmdistill.demo import DemoSettings


def _arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoSettings()
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help="optimizer steps per training run (default: 120 in bf16, 80 in float32, to fit 10 minutes)")
    parser.add_argument("--layers", type=int, default=defaults.layers, help="student layers kept of the teacher's 30 (the most important)")
    parser.add_argument("--prompts", type=int, default=defaults.prompts, help="training prompts to use (205 shipped; 32 others are held out for evaluation)")
    parser.add_argument("--output-dir", default=defaults.output_dir, help="where every stage writes")
    parser.add_argument("--precision", default=defaults.precision, choices=["auto", "no", "bf16"],
                        help="training precision; auto (default): bf16 mixed precision where the CPU or GPU has it natively")
    parser.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=defaults.freeze_embeddings,
                        help="keep the student's embeddings at the teacher's weights (default: on)")


@command("demo", "distil SmolLM2-135M-Instruct into a pruned student end to end, with a report", _arguments)
def _demo(args: argparse.Namespace) -> int:
    from lmdistill.demo import run_demo

    run_demo(DemoSettings(output_dir=args.output_dir, steps=args.steps, layers=args.layers, prompts=args.prompts,
                          precision=args.precision, freeze_embeddings=args.freeze_embeddings))
    return 0
