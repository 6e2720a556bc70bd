"""SIGINT/SIGTERM request a checkpoint and a clean exit at the end of the current step."""

from __future__ import annotations

import signal


class StopSignal:
    """Installs the handlers on enter and restores the previous ones on any exit, so an in-process caller always gets
    Ctrl-C back. ``requested`` turns True when a signal arrived (or the loop asks to stop)."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "StopSignal":
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners): keep default handling
                pass
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
