"""The preflight report: a list of named checks, each ok / warning / error with one line, printable as a table."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from lmdistill.errors import UserError

log = logging.getLogger("lmdistill.preflight")

Status = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``name`` (what was checked), ``status`` and a one-line ``message``."""

    name: str
    status: Status
    message: str


@dataclass
class PreflightReport:
    """The checks of one run config, in the order they ran."""

    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: Status, message: str) -> Check:
        check = Check(name, status, " ".join(message.split()))  # always one line
        self.checks.append(check)
        return check

    def ok(self, name: str, message: str) -> Check:
        return self.add(name, "ok", message)

    def warning(self, name: str, message: str) -> Check:
        return self.add(name, "warning", message)

    def error(self, name: str, message: str) -> Check:
        return self.add(name, "error", message)

    @property
    def errors(self) -> list[Check]:
        return [check for check in self.checks if check.status == "error"]

    @property
    def warnings(self) -> list[Check]:
        return [check for check in self.checks if check.status == "warning"]

    def status_of(self, name: str) -> Status | None:
        """The status of the first check called ``name`` (None when it did not run)."""
        return next((check.status for check in self.checks if check.name == name), None)

    def table(self) -> str:
        """One row per check: ``status  name  message``."""
        width = max((len(check.name) for check in self.checks), default=0)
        return "\n".join(f"{check.status:8s} {check.name:{width}s}  {check.message}" for check in self.checks)

    def raise_for_errors(self) -> None:
        """Log the warnings; raise the first error as a :class:`UserError` (its line names the fix)."""
        for check in self.warnings:
            log.warning("%s: %s", check.name, check.message)
        if self.errors:
            first = self.errors[0]
            raise UserError(f"{first.name}: {first.message}")
