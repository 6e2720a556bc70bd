"""Training progress: a live bar on a terminal; a log line at a steady interval when output goes to a file."""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("lmdistill.progress")


class ProgressReport:
    """``update(step, loss, tokens_per_second)`` after each optimizer step.

    On a terminal (stdout is a TTY) a rich progress bar; otherwise (cluster jobs, ``> log``) one line
    ``step S/T loss L tokens/s R ETA H:MM:SS`` every ``interval_s`` seconds and at the last step.
    """

    def __init__(self, total: int, start: int, *, enabled: bool, interval_s: float, terminal: bool | None = None):
        self.total, self.start = total, start
        self.enabled, self.interval_s = enabled, interval_s
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self._bar = None
        self._started = self._last_line = time.perf_counter()

    def __enter__(self) -> "ProgressReport":
        if self.enabled and self.terminal:
            self._bar = Progress(TextColumn("[bold]distill"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tokens_per_second]:,.0f} tok/s"),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
            self._bar.__enter__()
            self._task = self._bar.add_task("distill", total=self.total, completed=self.start, loss=float("nan"), tokens_per_second=0.0)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc_info)

    def update(self, step: int, loss: float, tokens_per_second: float) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=loss, tokens_per_second=tokens_per_second)
            return
        now = time.perf_counter()
        if now - self._last_line < self.interval_s and step < self.total:
            return
        self._last_line = now
        done = step - self.start
        eta = (now - self._started) / done * (self.total - step) if done else 0.0
        log.info("step %d/%d loss %.4f tokens/s %.0f ETA %s", step, self.total, loss, tokens_per_second,
                 timedelta(seconds=round(eta)))
