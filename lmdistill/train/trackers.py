"""Experiment trackers through accelerate's tracker integration: TensorBoard (the default), W&B, MLflow, Trackio, Aim.

``train.report_to`` names them; each gets the run's settings once (flattened to ``section.key`` scalars) and every
``metrics.jsonl`` record as scalars tagged ``train/<key>`` or ``eval/<metric>``. ``metrics.jsonl`` stays the record
the report reads; the trackers mirror it. Where a tracker stores its runs is its own setting (``WANDB_MODE``,
``WANDB_DIR``, ``MLFLOW_TRACKING_URI``, ...); TensorBoard writes ``OUTPUT/tensorboard/``, Aim ``OUTPUT/.aim``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from accelerate.tracking import TensorBoardTracker

from lmdistill.errors import UserError

# tracker name -> (module it needs, how to install it)
REQUIREMENTS = {
    "tensorboard": ("tensorboard", "pip install tensorboard"),
    "wandb": ("wandb", "pip install 'lmdistill[wandb]'"),
    "mlflow": ("mlflow", "pip install 'lmdistill[mlflow]'"),
    "trackio": ("trackio", "pip install 'lmdistill[trackio]'"),
    "aim": ("aim", "pip install 'lmdistill[aim]'"),
}


def check_installed(report_to: list[str]) -> None:
    """UserError naming the first tracker in ``report_to`` whose package is not installed (accelerate would drop it
    silently and the run would log nowhere)."""
    for name in report_to:
        module, install = REQUIREMENTS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"train.report_to includes {name} but {module} is not installed; {install}, or remove "
                            f"{name} from train.report_to")


def tracker_targets(report_to: list[str], output_dir: Path, resume_step: int) -> list:
    """accelerate's ``log_with`` for ``report_to``: TensorBoard as a tracker writing ``OUTPUT/tensorboard`` (events
    after ``resume_step`` from an interrupted run are purged), the others by name."""
    check_installed(report_to)
    return [TensorBoardTracker("tensorboard", str(output_dir), purge_step=resume_step or None)
            if name == "tensorboard" else name for name in report_to]


def init_kwargs(output_dir: Path) -> dict[str, dict[str, Any]]:
    """Per-tracker settings: the run is named after its output dir; W&B keeps its files there."""
    name = output_dir.resolve().name
    return {"wandb": {"name": name, "dir": str(output_dir)}, "mlflow": {"run_name": name}}


def flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"batch_size": 8}}`` -> ``{"train.batch_size": 8}``; lists become JSON text (trackers take scalars)."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of one metrics.jsonl record as tracker tags: ``eval/<metric>`` kept, others ``<split>/<key>`` with
    the key's own ``/`` as ``.`` (``train/loss.forward_kl``): a tag is never also the folder of another (MLflow's
    file store, Aim)."""
    prefix = record.get("split", "train")
    tags = {}
    for key, value in record.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
            tags[key if key.startswith("eval/") else f"{prefix}/{key.replace('/', '.')}"] = value
    return tags
