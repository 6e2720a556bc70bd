"""Run metrics: JSON lines (the report reads them), mirrored to the experiment trackers of ``train.report_to``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmdistill.train.trackers import flat_settings, init_kwargs, scalars


class MetricsLog:
    """Append-only ``metrics.jsonl`` plus the accelerator's trackers; only the main process writes."""

    def __init__(self, output_dir: str | Path, *, enabled: bool, resume_step: int = 0, accelerator=None,
                 project: str = "lmdistill", settings: dict[str, Any] | None = None):
        self.enabled = enabled
        self.path = Path(output_dir) / "metrics.jsonl"
        self._accelerator = accelerator if enabled else None
        if not enabled:
            return
        if resume_step and self.path.exists():
            # Drop lines from after the checkpoint we resume from, so steps are not logged twice.
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        if self._accelerator is not None and self._accelerator.log_with:
            self._accelerator.init_trackers(project, config=flat_settings(settings or {}),
                                            init_kwargs=init_kwargs(Path(output_dir)))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._accelerator is not None and self._accelerator.trackers:
            self._accelerator.log(scalars(record), step=record["step"])

    def close(self) -> None:
        # Not accelerator.end_training(): that also ends the process group, which export still needs.
        if self._accelerator is not None:
            for tracker in self._accelerator.trackers:
                tracker.finish()
            self._accelerator.trackers.clear()
            self._accelerator = None
