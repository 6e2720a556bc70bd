"""``lmdistill presets``: the distillation recipes (run a preset config with ``lmdistill train``)."""

from __future__ import annotations

import argparse

from lmdistill.commands.registry import command


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
