"""Preflight: each check on hand-built inputs, the report, the `check` command, and every shipped config."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lmdistill.cli import main
from lmdistill.config import parse_config
from lmdistill.errors import UserError
from lmdistill.models.loading import load_tokenizer, model_from_config
from lmdistill.preflight import PreflightReport, run_preflight
from lmdistill.preflight import checks, resources
from conftest import require_shared_data
from robust_helpers import (VOCAB, llama_config, make_tokenizer, sentences, tiny_config, tiny_data,  # noqa: F401
                            tiny_tokenizer_dir, write_config)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("generate-"))


def _only(report: PreflightReport, name: str):
    [check] = [c for c in report.checks if c.name == name]
    return check


def test_report_table_raises_the_first_error_and_logs_warnings(caplog):
    report = PreflightReport()
    report.ok("tokenizer", "fine")
    report.warning("disk", "close to\nfull")
    report.error("memory", "too big; lower batch")
    report.error("data", "second")
    assert report.table().splitlines() == ["ok       tokenizer  fine", "warning  disk       close to full",
                                           "error    memory     too big; lower batch", "error    data       second"]
    with caplog.at_level(logging.WARNING), pytest.raises(UserError, match=r"^memory: too big; lower batch$"):
        report.raise_for_errors()
    assert "disk: close to full" in caplog.text


def test_tiny_run_passes_and_reports_exact_numbers(tmp_path, tiny_tokenizer_dir, tiny_data):
    config = parse_config(tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data))
    report = run_preflight(config)
    assert not report.errors, report.table()
    tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    # Packed stream: every sentence + EOS, cut into blocks of 16; every position that predicts a token (all but each
    # block's last) is in the loss.
    stream = sum(len(tokenizer(text)["input_ids"]) + 1 for text in sentences())
    blocks = [min(16, stream - start) for start in range(0, stream, 16)]
    blocks = [b for b in blocks if b >= 2]
    total = in_loss = sum(b - 1 for b in blocks)
    assert _only(report, "loss positions").message == f"{in_loss / total:.1%} of {total} positions"
    assert _only(report, "pad/eos").message == f"pad = eos = 1; {len(sentences())} of {len(sentences())} EOS tokens are in the loss"
    assert _only(report, "token ids").message == f"largest id in the data {VOCAB - 1}"
    assert _only(report, "vocab sizes").message == f"student and teacher {VOCAB}, tokenizer {VOCAB}"
    # Student: 2 of the teacher's 4 blocks + embeddings, final norm and head (hidden 16, MLP 32, kv heads 1 of width 8).
    block = 16 * 16 * 2 + 16 * 8 * 2 + 3 * 16 * 32 + 2 * 16
    parameters = 2 * block + 2 * VOCAB * 16 + 16
    expected = int((3 * parameters * 12 + 4 * parameters) * 1.1) + 64 * 1024**2
    assert resources.checkpoint_bytes(parameters, 2) == expected
    assert _only(report, "student").message.endswith(f"{parameters / 1e6:.2f}M params")


def test_vocab_sizes_padding_rows_warn_and_missing_rows_fail(tiny_tokenizer_dir):
    tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    teacher = model_from_config(llama_config(VOCAB))
    report = PreflightReport()
    checks.check_vocab_sizes(report, tokenizer, teacher, model_from_config(llama_config(VOCAB + 8)))
    checks.check_vocab_sizes(report, tokenizer, teacher, model_from_config(llama_config(VOCAB - 1)))
    assert [c.status for c in report.checks] == ["warning", "error"]
    assert f"distilling over the shared {VOCAB}" in report.checks[0].message
    assert f"the student embeds {VOCAB - 1} tokens but the tokenizer has {VOCAB}" in report.checks[1].message


def test_token_ids_beyond_the_embedding_fail():
    report = PreflightReport()
    checks.check_token_range(report, [{"input_ids": [3, 9]}, {"input_ids": [10]}], {"student": model_from_config(llama_config(10))})
    assert report.checks[0].status == "error" and "token id 10 but the student embeds only 10" in report.checks[0].message


def test_pad_equal_eos_needs_real_eos_in_the_loss(tiny_tokenizer_dir):
    tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 1
    masked = [{"input_ids": [2, 3, 1], "labels": [2, 3, -100]}, {"input_ids": [4, 1, 1], "labels": [4, -100, -100]}]
    kept = [{"input_ids": [2, 3, 1], "labels": [2, 3, 1]}, {"input_ids": [4, 1, 1], "labels": [4, -100, -100]}]
    report = PreflightReport()
    checks.check_pad_eos(report, tokenizer, masked)
    checks.check_pad_eos(report, tokenizer, kept)
    checks.check_pad_eos(report, tokenizer, [{"input_ids": [2, 3], "labels": [2, 3]}])
    assert [c.status for c in report.checks] == ["error", "ok", "ok"]
    assert "none of the data's 3 EOS tokens is in the loss" in report.checks[0].message
    assert report.checks[1].message == "pad = eos = 1; 1 of 3 EOS tokens are in the loss"
    assert report.checks[2].message == "pad = eos = 1; the data holds no EOS token"


def test_loss_fraction_zero_fails_and_under_one_percent_warns():
    report = PreflightReport()
    checks.check_loss_fraction(report, [{"labels": [-100] * 8}])
    # 1 loss position (the first label never counts) of 199 predicted positions: 0.50%.
    checks.check_loss_fraction(report, [{"labels": [5] + [-100] * 198 + [7]}])
    checks.check_loss_fraction(report, [{"labels": [5, 6, 7, -100]}])
    assert [c.status for c in report.checks] == ["error", "warning", "ok"]
    assert report.checks[1].message.startswith("only 0.50% of positions are in the loss (1 of 199)")
    assert report.checks[2].message == "66.7% of 3 positions"


def test_chat_data_needs_a_chat_template(tmp_path, tiny_tokenizer_dir, tiny_data):
    config = parse_config(tiny_config(tmp_path, tiny_tokenizer_dir, tiny_data, data={"train": str(tiny_data), "format": "chat"}))
    with_template = load_tokenizer(str(make_tokenizer(tmp_path / "chat-tok", chat_template="{{ messages }}")))
    report = PreflightReport()
    assert not checks.check_chat_template(report, config, load_tokenizer(str(tiny_tokenizer_dir)))
    assert checks.check_chat_template(report, config, with_template)
    assert [c.status for c in report.checks] == ["error", "ok"]


def test_sequence_length_over_positions_fails_and_truncation_warns(tmp_path, tiny_tokenizer_dir, tiny_data):
    model = model_from_config(llama_config(VOCAB))
    too_long = parse_config(tiny_config(tmp_path, tiny_tokenizer_dir, tiny_data, data={"train": str(tiny_data), "max_length": 65}))
    unpacked = parse_config(tiny_config(tmp_path, tiny_tokenizer_dir, tiny_data,
                                        data={"train": str(tiny_data), "max_length": 4, "pack": False}))
    report = PreflightReport()
    checks.check_sequence_length(report, too_long, {"student": model}, None)
    checks.check_sequence_length(report, unpacked, {"student": model}, [{"input_ids": [1, 2, 3, 4]}, {"input_ids": [1, 2]}])
    assert [c.status for c in report.checks] == ["error", "warning"]
    assert "data.max_length=65 exceeds the student's max_position_embeddings=64" in report.checks[0].message
    assert report.checks[1].message.startswith("1 of 2 examples reach data.max_length=4")


def test_output_dir_under_a_file_and_memory_over_the_device_fail(tmp_path, tiny_tokenizer_dir, tiny_data, monkeypatch):
    (tmp_path / "file.txt").write_text("x")
    config = parse_config(tiny_config(tmp_path / "file.txt" / "run", tiny_tokenizer_dir, tiny_data))
    monkeypatch.setattr(resources, "available_memory", lambda device: (1024, "RAM available"))
    report = run_preflight(config)
    assert _only(report, "output dir").status == "error" and "is a file" in _only(report, "output dir").message
    assert _only(report, "memory").status == "error" and "0.0 GiB RAM available" in _only(report, "memory").message


def test_a_student_with_a_different_tokenizer_fails(tmp_path, tiny_tokenizer_dir, tiny_data):
    student = model_from_config(llama_config(VOCAB + 1))
    student.save_pretrained(tmp_path / "student")
    make_tokenizer(tmp_path / "student", extra_words=("zebra",))
    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, student={"path": str(tmp_path / "student")})
    report = run_preflight(parse_config(raw))
    check = _only(report, "student tokenizer")
    assert check.status == "error" and f"({VOCAB + 1} vs {VOCAB} tokens; e.g. 'zebra' -> {VOCAB})" in check.message


def test_hub_teacher_is_a_warning_and_check_exits_0(tmp_path, tiny_tokenizer_dir, tiny_data, capsys):
    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, teacher={"path": "Qwen/Qwen2.5-7B-Instruct"},
                      student={"config": llama_config(VOCAB)})
    assert main(["check", "--config", str(write_config(tmp_path / "run.yaml", raw))]) == 0
    out = capsys.readouterr().out
    assert "warning  teacher" in out and "not checked (hub id, not available offline)" in out and "ok: no errors" in out


def test_check_prints_the_table_and_exits_2_with_the_first_error(tmp_path, tiny_tokenizer_dir, tiny_data, capsys):
    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data)
    assert main(["check", "--config", str(write_config(tmp_path / "run.yaml", raw)), "data.max_length=100"]) == 2
    captured = capsys.readouterr()
    assert "error    sequence length" in captured.out and "ok       tokenizer" in captured.out
    assert captured.err.strip() == ("error: sequence length: data.max_length=100 exceeds the student's "
                                    "max_position_embeddings=64; set data.max_length <= 64")


def test_train_runs_preflight_before_the_first_step(tmp_path, tiny_tokenizer_dir, tiny_data):
    from lmdistill import distill

    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, objective=[{"name": "forward_kl", "temperature": 0.0}])
    with pytest.raises(UserError, match="objective: forward_kl: temperature reaches 0"):
        distill(raw)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_checks_clean(path, monkeypatch, capsys):
    if "../shared/" in path.read_text(encoding="utf-8"):
        require_shared_data()  # the config reads the shared data sets: skip, saying so, where they are absent
    monkeypatch.chdir(REPO)
    assert main(["check", "--config", str(path.relative_to(REPO))]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert out.rstrip().endswith("ok: no errors") and "error " not in out
