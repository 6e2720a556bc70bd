"""Publish a run's student to the Hugging Face Hub: the model dir with its card at the repo root, the report and the
run's record (config, metrics, evaluation) beside it, in one commit made by ``huggingface_hub``.

Everything up to the upload is plain file work (:func:`plan_upload`); :func:`upload` is the only call that reaches the
network, kept thin so the rest is tested without it.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import create_repo, get_token, upload_folder
from huggingface_hub.errors import HfHubHTTPError

from lmdistill.errors import UserError
from lmdistill.report.build import build_report
from lmdistill.report.model_card import write_model_card
from lmdistill.report.run_dir import load_run

log = logging.getLogger(__name__)

# Run files published under lmdistill/ in the repo: what made the student and how it scored.
RUN_FILES = ("config.yaml", "run_info.json", "metrics.jsonl", "evaluation.json")
REPORT_SUFFIXES = (".md", ".html", ".png")
STAGING = ".hub-upload"


@dataclass(frozen=True)
class Upload:
    """One commit to a Hub model repo: ``folder`` holds exactly the files to upload, at their paths in the repo."""

    repo_id: str
    folder: Path
    commit_message: str
    private: bool

    @property
    def files(self) -> list[str]:
        return sorted(str(path.relative_to(self.folder)) for path in self.folder.rglob("*") if path.is_file())


def _link(source: Path, target: Path) -> None:
    """A hard link (no copy of the weights), or a copy where links are not possible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def plan_upload(run_dir: str | Path, repo_id: str, *, private: bool = False) -> Upload:
    """Refresh the card and the report of ``run_dir`` and lay out the repo's files in ``RUN_DIR/.hub-upload``."""
    run_dir = Path(run_dir)
    student_dir = run_dir / "student"
    if not (student_dir / "config.json").is_file():
        raise UserError(f"{run_dir} has no exported student (student/config.json); push the dir a finished run wrote")
    if not repo_id or repo_id.count("/") > 1 or repo_id.startswith(("/", ".")):
        raise UserError(f"--repo-id {repo_id!r} is not a Hub repo id; write it as NAME or OWNER/NAME")
    try:
        build_report(run_dir)
    except ImportError as error:  # matplotlib is an optional extra; the card and the model still go up
        log.warning("report not rebuilt (%s); install lmdistill[eval] to publish it", error)
    write_model_card(run_dir)
    staging = run_dir / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    for path in sorted(student_dir.rglob("*")):
        if path.is_file():
            _link(path, staging / path.relative_to(student_dir))
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            _link(run_dir / name, staging / "lmdistill" / name)
    report_dir = run_dir / "report"
    for path in sorted(report_dir.glob("*")) if report_dir.is_dir() else []:
        if path.suffix in REPORT_SUFFIXES:
            _link(path, staging / "report" / path.name)
    steps = _last_step(run_dir)
    message = f"Upload student distilled with lmdistill ({run_dir.resolve().name}{f', {steps} steps' if steps else ''})"
    return Upload(repo_id, staging, message, private)


def _last_step(run_dir: Path) -> int | None:
    rows = load_run(run_dir).train_rows
    return int(rows[-1]["step"]) if rows else None


def hub_token() -> str:
    """The user's Hugging Face token (``HF_TOKEN`` or ``hf auth login``); a one-line UserError when there is none."""
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token found; run `hf auth login` or set HF_TOKEN to a token with write access")
    return token


def upload(plan: Upload, token: str) -> str:
    """Create the repo (if new) and upload the planned folder in one commit; returns the commit URL."""
    try:
        create_repo(plan.repo_id, token=token, private=plan.private, exist_ok=True)
        commit = upload_folder(repo_id=plan.repo_id, folder_path=str(plan.folder), commit_message=plan.commit_message,
                               token=token)
    except HfHubHTTPError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"the Hub refused the upload to {plan.repo_id} ({first_line}); check the repo id and that "
                        f"the token may write to it") from None
    return str(commit.commit_url)


def push_run(run_dir: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Publish ``run_dir``'s student, card and report to ``repo_id``; returns the commit URL."""
    token = hub_token()  # before any work: a missing token is the user's first thing to fix
    plan = plan_upload(run_dir, repo_id, private=private)
    try:
        return upload(plan, token)
    finally:
        shutil.rmtree(plan.folder, ignore_errors=True)
