"""Faults: non-finite losses, runs stopped by K bad steps, SIGINT/SIGTERM, and kill -9 while a checkpoint is written.

Every interrupted run must resume to exactly the weights of an uninterrupted one. Subprocesses run the real CLI
(``python -m lmdistill train``); a run stopped by SIGINT or SIGTERM saves a checkpoint and exits with code 130.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmdistill import distill
from lmdistill.cli import main
from lmdistill.losses import registry
from lmdistill.train.checkpoint import latest_checkpoint
from robust_helpers import tiny_config, tiny_data, tiny_tokenizer_dir, write_config  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
LONG_RUN = {"max_steps": 60, "batch_size": 4, "learning_rate": 1e-2, "warmup_steps": 5, "log_every": 1, "progress": False}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "student" / "model.safetensors"))


def _assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6)


def _nan_from_call(monkeypatch, first_bad_call: int, last_bad_call: int | None = None) -> None:
    """Make the registered `ce` loss return NaN on calls first..last (0-based; one call per step here)."""
    original = registry.spec("ce")
    calls = {"n": 0}

    def flaky_ce(student_logits, labels, **params):
        index = calls["n"]
        calls["n"] += 1
        per_position = original.fn(student_logits, labels, **params)
        bad = index >= first_bad_call and (last_bad_call is None or index <= last_bad_call)
        return per_position * float("nan") if bad else per_position

    monkeypatch.setitem(registry._REGISTRY, "ce", dataclasses.replace(original, fn=flaky_ce))


def test_a_non_finite_loss_skips_the_step_and_is_counted(tmp_path, tiny_tokenizer_dir, tiny_data, monkeypatch):
    objective = [{"name": "ce", "weight": 1.0}]
    clean = distill(tiny_config(tmp_path / "clean", tiny_tokenizer_dir, tiny_data, objective=objective), stop_after=1)
    _nan_from_call(monkeypatch, 1, 1)  # step 2 only
    flaky = distill(tiny_config(tmp_path / "flaky", tiny_tokenizer_dir, tiny_data, objective=objective), stop_after=2)
    assert flaky.skipped_steps == 1 and flaky.steps == 2
    losses = [json.loads(line)["loss"] for line in (tmp_path / "flaky" / "metrics.jsonl").read_text().splitlines()]
    assert losses[0] == losses[0] and losses[1] != losses[1]  # step 1 finite, step 2 NaN (logged, not applied)
    # The skipped step changed no weight: after steps 1-2 the student equals the clean run after step 1.
    _assert_same_weights(_weights(tmp_path / "flaky"), _weights(tmp_path / "clean"))


def test_consecutive_bad_steps_stop_with_a_message_and_a_checkpoint_that_resumes(tmp_path, tiny_tokenizer_dir, tiny_data,
                                                                                monkeypatch, capsys):
    train = {**LONG_RUN, "max_steps": 5, "max_bad_steps": 2}
    config = write_config(tmp_path / "run.yaml", tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, train=train))
    handler_before = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as patch:
        _nan_from_call(patch, 1)  # every step from step 2 on
        assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: the loss was not finite for 2 consecutive steps (step 2)")
    assert "lower train.learning_rate" in err
    checkpoint = latest_checkpoint(tmp_path / "run")
    assert checkpoint.name == "step-00000002" and json.loads((checkpoint / "trainer_state.json").read_text())["skipped_steps"] == 2
    assert signal.getsignal(signal.SIGINT) is handler_before  # the loop gave Ctrl-C back
    assert main(["train", "--config", str(config), "--resume"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3, 4, 5] and all(line["loss"] == line["loss"] for line in lines[2:])


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory, tiny_tokenizer_dir, tiny_data):
    """The uninterrupted LONG_RUN's final student."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reference") / "run"
    distill(tiny_config(out, tiny_tokenizer_dir, tiny_data, train=LONG_RUN))
    torch.set_num_threads(threads)
    return _weights(out)


# The real CLI, with the checkpoint writer held for a while after the complete .tmp- dir is written (and before the
# rename), so a test can kill -9 the process exactly there. The product has no test hook; the test patches it.
_SLOW_CHECKPOINT = """
import sys, time
from lmdistill.train import checkpoint
original = checkpoint._fsync_tree
checkpoint._fsync_tree = lambda folder: (original(folder), time.sleep(float(sys.argv[1])))
from lmdistill.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _start_training(config: Path, *overrides: str, hold_checkpoint_s: float | None = None) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    arguments = ["train", "--config", str(config), *overrides]
    command = ([sys.executable, "-c", _SLOW_CHECKPOINT, str(hold_checkpoint_s), *arguments] if hold_checkpoint_s
               else [sys.executable, "-m", "lmdistill", *arguments])
    return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"training ended early with {process.returncode}: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_a_checkpoint_exits_130_and_resumes_to_the_same_weights(signum, tmp_path, tiny_tokenizer_dir,
                                                                               tiny_data, reference_weights):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", tiny_config(run_dir, tiny_tokenizer_dir, tiny_data, train=LONG_RUN))
    process = _start_training(config)
    metrics = run_dir / "metrics.jsonl"
    _wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted after" in stderr and "Traceback" not in stderr
    checkpoint = latest_checkpoint(run_dir)
    stopped_at = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
    assert 2 <= stopped_at < LONG_RUN["max_steps"]
    resumed = distill(tiny_config(run_dir, tiny_tokenizer_dir, tiny_data, train=LONG_RUN), resume=True)
    assert resumed.steps == LONG_RUN["max_steps"] and not resumed.stopped_early
    _assert_same_weights(_weights(run_dir), reference_weights)


def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_tokenizer_dir, tiny_data, reference_weights):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "run.yaml", tiny_config(run_dir, tiny_tokenizer_dir, tiny_data, train=LONG_RUN))
    checkpoints = run_dir / "checkpoints"
    process = _start_training(config, "train.save_every=2", hold_checkpoint_s=1.5)
    _wait_for(lambda: (checkpoints / "step-00000002").is_dir() and (checkpoints / ".tmp-step-00000004").is_dir(), process)
    process.kill()  # SIGKILL: no handler runs, the rename never happens
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert latest_checkpoint(run_dir).name == "step-00000002"
    resumed = distill(tiny_config(run_dir, tiny_tokenizer_dir, tiny_data, train=LONG_RUN), resume=True)
    assert resumed.steps == LONG_RUN["max_steps"]
    assert not list(checkpoints.glob(".tmp-*"))  # the final save removed the torn one
    _assert_same_weights(_weights(run_dir), reference_weights)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, LONG_RUN["max_steps"] + 1))  # steps 3-4 logged once, after the resume
