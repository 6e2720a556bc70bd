"""``lmdistill finetune``, ``lmdistill presets`` and ``lmdistill train-preset``: encoder/classification recipes."""

from __future__ import annotations

import argparse

from lmdistill.cli import command


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="run config (YAML)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides with dotted paths, e.g. train.max_steps=3")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")


@command("finetune", "fine-tune a model on labels with plain cross-entropy (e.g. to make a teacher)", _config_arguments)
def _finetune(args: argparse.Namespace) -> int:
    from lmdistill.finetune import finetune

    result = finetune(args.config, overrides=args.overrides, resume=args.resume)
    print(f"fine-tuned for {result.steps} steps (loss {result.final_loss:.4f}); model saved to {result.student_dir}")
    return 0


def _presets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--show", metavar="NAME", help="print the objective terms of each stage of one preset (YAML)")


@command("presets", "list the distillation presets (recipes), one line each", _presets_arguments)
def _presets(args: argparse.Namespace) -> int:
    import yaml

    from lmdistill.presets import describe_presets, preset_stages

    if args.show:
        stages = [{"stage": s.name, "share": s.share, "objective": s.objective} for s in preset_stages(args.show)]
        print(yaml.safe_dump(stages, sort_keys=False), end="")
        return 0
    print("\n".join(describe_presets()))
    return 0


@command("train-preset", "run a config that names a `preset` (all its stages in order)", _config_arguments)
def _train_preset(args: argparse.Namespace) -> int:
    from lmdistill.presets import load_preset_config, run_stages

    results = run_stages(load_preset_config(args.config, args.overrides), resume=args.resume)
    for result in results:
        print(f"{result.output_dir}: {result.steps} steps (loss {result.final_loss:.4f}); student in {result.student_dir}")
    return 0
