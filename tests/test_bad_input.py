"""User-caused problems: each gives exit code 2 and one line ``error: ...`` naming the problem and the fix, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmdistill.cli import main
from robust_helpers import VOCAB, llama_config, tiny_config, tiny_data, tiny_tokenizer_dir, write_config  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _saved_model(folder: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = llama_config(VOCAB)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(settings.pop("model_type"), **settings))
    model.save_pretrained(folder)
    return folder


def _corrupt_config_json(tmp, tok, data):
    folder = _saved_model(tmp / "teacher")
    (folder / "config.json").write_text("{not json")
    return {"teacher": {"path": str(folder)}}, [], "config.json is corrupt"


def _truncated_weights(tmp, tok, data):
    folder = _saved_model(tmp / "teacher")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return {"teacher": {"path": str(folder)}}, [], "cannot load teacher"


def _docx_data(tmp, tok, data):
    (tmp / "notes.docx").write_bytes(b"PK\x03\x04 not really")
    return {"data": {"train": str(tmp / "notes.docx"), "max_length": 16}}, [], "unsupported file type '.docx'"


def _empty_dataset(tmp, tok, data):
    (tmp / "empty.jsonl").write_text("")
    return {"data": {"train": str(tmp / "empty.jsonl"), "max_length": 16}}, [], "has no records"


def _non_utf8(tmp, tok, data):
    (tmp / "latin1.txt").write_bytes("the caf\xe9 sat on the mat".encode("latin-1"))
    return {"data": {"train": str(tmp / "latin1.txt"), "max_length": 16}}, [], "not UTF-8"


def _malformed_jsonl(tmp, tok, data):
    (tmp / "bad.jsonl").write_text('{"text": "the cat"}\n{"text": the dog}\n')
    return {"data": {"train": str(tmp / "bad.jsonl"), "max_length": 16}}, [], "bad.jsonl:2: malformed JSON line"


def _output_under_a_file(tmp, tok, data):
    (tmp / "file.txt").write_text("x")
    return {"output_dir": str(tmp / "file.txt" / "sub")}, [], "cannot be written"


def _teacher_path_is_a_file(tmp, tok, data):
    (tmp / "weights.bin").write_bytes(b"\0")
    return {"teacher": {"path": str(tmp / "weights.bin")}}, [], "does not exist"


def _chat_without_template(tmp, tok, data):
    (tmp / "chat.jsonl").write_text('{"messages": [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat"}]}\n')
    return {"data": {"train": str(tmp / "chat.jsonl"), "format": "chat", "max_length": 16}}, [], "chat template"


# (name, changes to the tiny config | callable(tmp, tok, data) -> (changes, overrides, expected), overrides, expected)
CASES = [
    ("missing model dir", lambda t, k, d: ({"teacher": {"path": str(t / "no-such-model")}}, [], "does not exist")),
    ("corrupt config.json", _corrupt_config_json),
    ("truncated weights file", _truncated_weights),
    ("teacher path is a file", _teacher_path_is_a_file),
    ("data file of the wrong type", _docx_data),
    ("empty dataset", _empty_dataset),
    ("non-UTF-8 text", _non_utf8),
    ("malformed JSONL line", _malformed_jsonl),
    ("missing data file", lambda t, k, d: ({"data": {"train": str(t / "nope.jsonl")}}, [], "not found")),
    ("missing field", lambda t, k, d: ({}, ["data.text_field=body"], "has no field 'body'")),
    ("chat data without a chat template", _chat_without_template),
    ("unknown loss", lambda t, k, d: ({}, ["objective.1.name=kl_divergence"], "unknown loss 'kl_divergence'")),
    ("unknown loss parameter", lambda t, k, d: ({}, ["objective.0.alpha=0.3"], "has no parameter 'alpha'")),
    ("zero temperature", lambda t, k, d: ({}, ["objective.0.temperature=0"], "temperature")),
    ("zero learning rate", lambda t, k, d: ({}, ["train.learning_rate=0"], "train.learning_rate")),
    ("negative learning rate", lambda t, k, d: ({}, ["train.learning_rate=-0.001"], "train.learning_rate")),
    ("both max_steps and epochs", lambda t, k, d: ({}, ["train.epochs=1"], "set exactly one of max_steps, epochs")),
    ("misspelled key", lambda t, k, d: ({}, ["train.learnig_rate=0.1"], "unknown key")),
    ("override without =", lambda t, k, d: ({}, ["train.max_steps"], "is not key=value")),
    ("override index out of range", lambda t, k, d: ({}, ["objective.5.weight=1"], "is not an index")),
    ("override through a scalar", lambda t, k, d: ({}, ["seed.value=1"], "not a mapping")),
    ("max_length over the position embeddings", lambda t, k, d: ({}, ["data.max_length=100"], "max_position_embeddings=64")),
    ("student vocabulary smaller than the teacher's", lambda t, k, d: (
        {"student": {"config": llama_config(VOCAB - 5)}}, [], "differ by more than padding")),
    ("tokenizer larger than both models", lambda t, k, d: (
        {"teacher": {"config": llama_config(VOCAB - 5)}}, [], "the tokenizer has")),
    ("layer map out of range", lambda t, k, d: (
        {"objective": [{"name": "hidden_mse", "layers": [[0, 0], [1, 7]]}]}, [], "layer pair [1, 7] out of range")),
    ("pruned layer out of range", lambda t, k, d: ({"student": {"from_teacher": {"layers": [0, 9]}}}, [], "out of range")),
    ("attention heads differ", lambda t, k, d: (
        {"student": {"config": llama_config(VOCAB, num_attention_heads=4, num_key_value_heads=2)},
         "objective": [{"name": "attention_mse", "layers": "last"}]}, [], "needs equal head counts")),
    ("output_dir under a regular file", _output_under_a_file),
    ("missing tokenizer", lambda t, k, d: ({"tokenizer": str(t / "no-tokenizer")}, [], "does not exist")),
    ("no tokenizer for config-built models", lambda t, k, d: ({"tokenizer": None}, [], "no tokenizer")),
    ("batch larger than the dataset", lambda t, k, d: ({}, ["train.batch_size=500"], "fewer than one global batch")),
]


@pytest.mark.parametrize("name,case", CASES, ids=[name for name, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(name, case, tmp_path, tiny_tokenizer_dir, tiny_data, capsys):
    changes, overrides, expected = case(tmp_path, tiny_tokenizer_dir, tiny_data)
    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data)
    for key, value in changes.items():
        raw[key] = value
        if value is None:
            del raw[key]
    config = write_config(tmp_path / "run.yaml", raw)
    capsys.readouterr()  # drop what building the case printed (save_pretrained progress)
    assert main(["train", "--config", str(config), *overrides]) == 2
    _assert_one_error_line(capsys.readouterr().err, expected)


def _assert_one_error_line(err: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO ", "WARNING "))]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in err
    assert "; " in lines[0] or "," in lines[0]  # the problem, then the fix


def test_malformed_yaml(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("output_dir: x\ntrain: {max_steps: 1\n")
    assert main(["train", "--config", str(config)]) == 2
    _assert_one_error_line(capsys.readouterr().err, "malformed YAML")


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    _assert_one_error_line(capsys.readouterr().err, "not found")


def test_labels_out_of_range_for_classification(tmp_path, tiny_tokenizer_dir, capsys):
    bert = {"model_type": "bert", "vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 32, "max_position_embeddings": 64, "num_labels": 2}
    (tmp_path / "sst.jsonl").write_text("".join(f'{{"text": "the cat sat", "label": {label}}}\n' for label in (0, 1, 5, 1)))
    raw = {"output_dir": str(tmp_path / "run"), "task": "sequence_classification", "tokenizer": str(tiny_tokenizer_dir),
           "teacher": {"config": bert}, "student": {"config": {**bert, "num_hidden_layers": 1}},
           "data": {"train": str(tmp_path / "sst.jsonl"), "max_length": 16}, "objective": [{"name": "soft_ce"}],
           "train": {"max_steps": 1, "batch_size": 4, "progress": False}}
    assert main(["train", "--config", str(write_config(tmp_path / "run.yaml", raw))]) == 2
    _assert_one_error_line(capsys.readouterr().err, "the data has label 5 but the model outputs only 2 classes")


def test_resume_from_a_checkpoint_of_another_run(tmp_path, tiny_tokenizer_dir, tiny_data, capsys):
    config = write_config(tmp_path / "run.yaml", tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data))
    assert main(["train", "--config", str(config), "train.max_steps=1"]) == 0
    capsys.readouterr()
    assert main(["train", "--config", str(config)]) == 2  # a fresh run must not overwrite checkpoints
    _assert_one_error_line(capsys.readouterr().err, "already holds checkpoints")
    assert main(["train", "--config", str(config), "--resume", "train.learning_rate=0.5"]) == 2
    _assert_one_error_line(capsys.readouterr().err, "belongs to a different run")


@pytest.mark.parametrize("content,expected", [("output_dir: x\n  bad: [\n", "malformed YAML"),
                                              ("output_dir: x\n", "student: Field required; add student to the config")])
def test_real_process_prints_one_line_and_exits_2(tmp_path, content, expected):
    config = tmp_path / "run.yaml"
    config.write_text(content)
    completed = subprocess.run([sys.executable, "-m", "lmdistill", "train", "--config", str(config)],
                               capture_output=True, text=True, cwd=REPO, timeout=120)
    assert completed.returncode == 2
    _assert_one_error_line(completed.stderr, expected)


@pytest.mark.parametrize("damaged,expected", [("shard-00000.safetensors", "is truncated or missing"),
                                              ("index.safetensors", "is unreadable (truncated or missing)")])
def test_truncated_cache_file(damaged, expected, tmp_path, tiny_tokenizer_dir, tiny_data, capsys):
    config = write_config(tmp_path / "run.yaml", tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data))
    cache = tmp_path / "cache"
    assert main(["cache", "--config", str(config), "--top-k", "4", "--output", str(cache)]) == 0
    target = cache / damaged
    target.write_bytes(target.read_bytes()[:100])
    raw = tiny_config(tmp_path / "student-run", tiny_tokenizer_dir, tiny_data, teacher={"cache": str(cache)},
                      student={"config": llama_config(VOCAB, num_hidden_layers=2)}, objective=[{"name": "forward_kl"}])
    capsys.readouterr()
    assert main(["train", "--config", str(write_config(tmp_path / "student.yaml", raw))]) == 2
    _assert_one_error_line(capsys.readouterr().err, expected)
