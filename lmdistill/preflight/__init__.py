"""Preflight: check a run config (tokenizers, vocabularies, data, lengths, disk, memory) before training."""

from lmdistill.preflight.report import Check, PreflightReport
from lmdistill.preflight.run import NOT_GIVEN, offline_status, run_preflight

__all__ = ["Check", "PreflightReport", "NOT_GIVEN", "offline_status", "run_preflight"]
