"""The public Python API; the CLI's ``train``, ``finetune`` and ``check`` call exactly these functions.

Every kind of run config goes through :func:`load_run_configs`: a plain run, a ``preset:`` run (one config per
stage) and a label-only run (fine-tuning: no teacher, label terms only; ``num_labels`` optional).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lmdistill.config import RunConfig, apply_overrides, read_yaml
from lmdistill.errors import UserError
from lmdistill.finetune import finetune_config
from lmdistill.presets import expand_preset_config, run_stages
from lmdistill.tasks import check_config, get_task
from lmdistill.train.loop import RunResult

ConfigSource = RunConfig | dict[str, Any] | str | Path


def load_run_configs(config: ConfigSource, overrides: list[str] | None = None) -> list[RunConfig]:
    """The validated run config(s) ``config`` stands for (a RunConfig, a raw dict or a YAML path, with ``key=value``
    overrides), each checked against its task's settings: one per stage of a preset, else one."""
    if isinstance(config, RunConfig):
        if overrides:  # a caller's mistake in Python, not a config a user wrote
            raise ValueError("overrides apply to a YAML path or a dict; change the RunConfig's fields directly")
        configs = [config]
    else:
        source = str(config) if isinstance(config, (str, Path)) else "config"
        raw = read_yaml(config, overrides) if isinstance(config, (str, Path)) else apply_overrides(copy.deepcopy(config), overrides or [])
        label_only = isinstance(raw, dict) and "teacher" not in raw and "preset" not in raw and "student" in raw
        configs = [finetune_config(raw, source=source)] if label_only else expand_preset_config(raw, source=source)
    for each in configs:
        check_config(get_task(each.task), each)
    return configs


def distill(config: ConfigSource, *, resume: bool = False, overrides: list[str] | None = None,
            stop_after: int | None = None) -> RunResult:
    """Run a distillation (every stage of a preset, in order); returns the last stage's ``RunResult``.

    A stage stopped early (Ctrl-C, SIGTERM, ``stop_after``) saves its checkpoint and no later stage starts: its result
    (``stopped_early=True``) is returned. ``resume`` continues each stage from its newest checkpoint.
    """
    return run_stages(load_run_configs(config, overrides), resume=resume, stop_after=stop_after)[-1]


def finetune(config: ConfigSource, *, overrides: list[str] | None = None, resume: bool = False,
             stop_after: int | None = None) -> RunResult:
    """Fine-tune on labels alone (e.g. to make a teacher): like :func:`distill`, but teacher terms are refused."""
    configs = load_run_configs(config, overrides)
    for each in configs:
        if each.needs_teacher or each.teachers:
            raise UserError("fine-tuning uses label terms only and no teacher; drop `teacher` and keep label terms "
                            "(ce), or use `lmdistill train` to distil from a teacher")
    return run_stages(configs, resume=resume, stop_after=stop_after)[-1]
