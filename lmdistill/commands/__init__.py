"""Subcommands kept beside the features they expose; importing this package registers every command."""

from lmdistill.commands import cache, check, compress, demo, evaluate, generate, presets, publish, train
from lmdistill.commands.registry import COMMANDS

__all__ = ["COMMANDS", "cache", "check", "compress", "demo", "evaluate", "generate", "presets", "publish", "train"]
