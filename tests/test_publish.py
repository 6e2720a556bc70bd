"""Publishing to the Hub: everything up to the upload call (which files, commit message, card, privacy); no network."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
from huggingface_hub import ModelCard

from conftest import tiny_run_config
from lmdistill import distill
from lmdistill.cli import main
from lmdistill.errors import UserError
from lmdistill.report import publish
from test_model_card import _synthetic_run


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


@pytest.fixture
def uploads(monkeypatch):
    """Replace the one network call: record what would be uploaded (the staged files are gone afterwards)."""
    calls = []

    def fake_upload(plan, token):
        card = ModelCard.load(plan.folder / "README.md")
        calls.append({"repo_id": plan.repo_id, "files": plan.files, "message": plan.commit_message,
                      "private": plan.private, "token": token, "card": card})
        return f"https://huggingface.co/{plan.repo_id}/commit/0"

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(publish, "upload", fake_upload)
    return calls


def test_push_uploads_the_student_at_the_root_with_card_report_and_run_record(tmp_path, uploads, capsys):
    run_dir = _synthetic_run(tmp_path / "run")
    assert main(["push", str(run_dir), "--repo-id", "someone/tiny-student", "--private"]) == 0
    assert "pushed to https://huggingface.co/someone/tiny-student/commit/0" in capsys.readouterr().out
    [call] = uploads
    assert call["repo_id"] == "someone/tiny-student" and call["private"] is True and call["token"] == "hf_test_token"
    assert call["files"] == sorted([
        "README.md", "config.json", "model.safetensors",
        "lmdistill/config.yaml", "lmdistill/evaluation.json", "lmdistill/metrics.jsonl", "lmdistill/run_info.json",
        "report/report.md", "report/report.html", "report/loss.png", "report/eval_metrics.png",
        "report/model_comparison.png",
    ])
    assert call["message"] == "Upload student distilled with lmdistill (run, 3 steps)"
    assert call["card"].data.pipeline_tag == "text-generation"
    assert {(r.metric_type, r.metric_value) for r in call["card"].data.eval_results} >= {("perplexity", 15.25)}
    assert not (run_dir / publish.STAGING).exists()  # the staging links are removed after the upload


def test_push_without_a_token_is_a_one_line_error(tmp_path, no_token, capsys, monkeypatch):
    run_dir = _synthetic_run(tmp_path / "run")
    monkeypatch.setattr(publish, "upload", lambda plan, token: pytest.fail("must not upload without a token"))
    assert main(["push", str(run_dir), "--repo-id", "someone/tiny-student"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no Hugging Face token" in error and "HF_TOKEN" in error


def test_push_of_a_dir_without_a_student_or_with_a_bad_repo_id_is_refused(tmp_path, uploads):
    with pytest.raises(UserError, match="no exported student"):
        publish.push_run(tmp_path, "someone/x")
    run_dir = _synthetic_run(tmp_path / "run")
    with pytest.raises(UserError, match="not a Hub repo id"):
        publish.push_run(run_dir, "a/b/c")
    assert uploads == []


def test_a_run_with_output_push_to_hub_uploads_when_it_finishes(tmp_path, gpt2_tokenizer_dir, uploads):
    config = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir, output={"push_to_hub": "someone/tiny"},
                             train={"max_steps": 2, "batch_size": 4, "log_every": 1, "progress": False})
    distill(config)
    [call] = uploads
    assert call["repo_id"] == "someone/tiny" and call["private"] is False
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "lmdistill/metrics.jsonl"} <= set(call["files"])
    assert call["message"] == "Upload student distilled with lmdistill (run, 2 steps)"


def test_a_run_that_would_push_without_a_token_fails_before_training(tmp_path, gpt2_tokenizer_dir, no_token):
    config = tiny_run_config(tmp_path / "run", gpt2_tokenizer_dir, output={"push_to_hub": "someone/tiny"})
    with pytest.raises(UserError, match="no Hugging Face token"):
        distill(config)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
