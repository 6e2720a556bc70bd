"""Atomic checkpoints: written to a temporary dir, then renamed; resume picks the newest complete one.

A checkpoint is ``OUTPUT/checkpoints/step-00000042/`` holding accelerate's state (model, optimizer, scheduler and
RNG states, sharded correctly under FSDP/DeepSpeed) and ``trainer_state.json`` (step, config fingerprint). A crash
or ``kill -9`` while writing leaves only a ``.tmp-`` dir behind, which resume ignores and the next save removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from lmdistill.errors import UserError

STATE_FILE = "trainer_state.json"


def fingerprint(resolved_config: dict[str, Any]) -> str:
    """A hash of everything that determines the run's result (run-length, logging and publishing settings excluded)."""
    relevant = {k: v for k, v in resolved_config.items() if k not in ("output_dir", "output")}
    train = dict(relevant.get("train", {}))
    for key in ("max_steps", "epochs", "log_every", "eval_every", "save_every", "keep_checkpoints", "progress",
                "report_to", "tracker_project"):
        train.pop(key, None)
    relevant["train"] = train
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (one with a trainer_state.json), or None."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return None
    complete = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file())
    return complete[-1] if complete else None


def step_of(checkpoint: Path) -> int:
    """The optimizer step a checkpoint dir (``step-00000042``) was saved after."""
    return int(checkpoint.name.removeprefix("step-"))


def save_checkpoint(accelerator, output_dir: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Save accelerate state + trainer state under a temp name, then rename atomically; prune old checkpoints."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:08d}"
    temporary = root / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=False)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state_path = temporary / STATE_FILE
        state_path.write_text(json.dumps(state, indent=2))
        _fsync_tree(temporary)
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        _fsync_dir(root)
        for old in sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, checkpoint: Path, expected_fingerprint: str) -> dict[str, Any]:
    """Restore accelerate state from ``checkpoint``; refuse a checkpoint of a different run."""
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
    except (OSError, ValueError):
        raise UserError(f"checkpoint {checkpoint} is unreadable; delete it to resume from the one before") from None
    if state.get("fingerprint") != expected_fingerprint:
        raise UserError(
            f"checkpoint {checkpoint} belongs to a different run (its config differs); "
            "use another output_dir or drop --resume to start over"
        )
    accelerator.load_state(str(checkpoint))
    return state


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
