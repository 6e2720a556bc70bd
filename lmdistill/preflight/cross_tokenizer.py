"""Preflight for a teacher with its own tokenizer: how much of the student's loss the alignment reaches."""

from __future__ import annotations

from typing import Any

from lmdistill.config import RunConfig
from lmdistill.data.alignment import alignment_coverage
from lmdistill.data.token_bytes import TokenBytes, exact_token_map
from lmdistill.errors import UserError
from lmdistill.teachers.cross_tokenizer import teacher_tokenizer
from lmdistill.preflight.report import PreflightReport

SAMPLE = 200  # examples looked at: enough for a share to two digits, quick on CPU


def is_cross_tokenizer(config: RunConfig) -> bool:
    return any(teacher.tokenizer is not None for teacher in config.teachers)


def check_cross_tokenizer(report: PreflightReport, config: RunConfig, tokenizer: Any, train_examples: list[dict] | None) -> None:
    """Report the share of the student's loss positions aligned with a teacher position and of its loss tokens
    exactly mapped to one teacher token; a warning when under half the positions align."""
    source = config.teachers[0].tokenizer
    try:
        loaded = teacher_tokenizer(source)
    except UserError as error:
        report.error("teacher tokenizer", str(error))
        return
    student_bytes, teacher_bytes = TokenBytes.of(tokenizer), TokenBytes.of(loaded)
    student_ids, _ = exact_token_map(student_bytes, teacher_bytes)
    vocabulary = f"{source}: {len(loaded)} tokens, {len(student_ids)} with the same string as a student token"
    if not train_examples:
        report.ok("teacher tokenizer", vocabulary)
        return
    coverage = alignment_coverage(train_examples[:SAMPLE], student_bytes, loaded, teacher_bytes, student_ids)
    line = f"{vocabulary}; {coverage.describe()} (first {min(SAMPLE, len(train_examples))} examples)"
    if coverage.aligned_share < 0.5:
        report.warning("teacher tokenizer", line + "; few positions align, so logit terms see little of the data")
    else:
        report.ok("teacher tokenizer", line)
