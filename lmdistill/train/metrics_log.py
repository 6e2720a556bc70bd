"""Run metrics: JSON lines (the report reads them) and TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only ``metrics.jsonl`` plus TensorBoard scalars; only the main process writes."""

    def __init__(self, output_dir: str | Path, *, enabled: bool, resume_step: int = 0):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self._writer = None
        if not enabled:
            return
        if resume_step and self.path.exists():
            # Drop lines from after the checkpoint we resume from, so steps are not logged twice.
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=resume_step or None)
        except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
            self._writer = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            prefix = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step",):
                    tag = key if "/" in key and key.startswith("eval") else f"{prefix}/{key}"
                    self._writer.add_scalar(tag, value, record["step"])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
