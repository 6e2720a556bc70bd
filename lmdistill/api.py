"""The public Python API; the CLI calls exactly these functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmdistill.config import RunConfig, load_config, parse_config


def distill(
    config: RunConfig | dict[str, Any] | str | Path,
    *,
    resume: bool = False,
    overrides: list[str] | None = None,
    stop_after: int | None = None,
):
    """Run a distillation from a :class:`RunConfig`, a raw dict, or a YAML path; returns a ``RunResult``.

    ``stop_after`` ends the run cleanly (with a checkpoint) after that step; ``resume`` continues the newest one.
    """
    from lmdistill.train.loop import distill as run

    if isinstance(config, (str, Path)):
        config = load_config(config, overrides)
    elif isinstance(config, dict):
        config = parse_config(config)
    return run(config, resume=resume, stop_after=stop_after)
