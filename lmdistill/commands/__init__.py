"""Subcommands kept beside the features they expose; importing a module registers its commands with the CLI."""

import importlib

# One line per feature area; each module calls lmdistill.cli.command(...) at import.
_MODULES = [
    "generate",
    "encoder",
    "cache",
    "demo",
    "check",
    "evaluate",
]

for _name in _MODULES:
    importlib.import_module(f"lmdistill.commands.{_name}")
