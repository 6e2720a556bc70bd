"""Data parallelism: 2 CPU processes (gloo) end with the same student as 1 process on the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import tiny_run_config
from lmdistill import distill


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, gpt2_tokenizer_dir):
    objective = [{"name": "forward_kl", "weight": 1.0, "temperature": 2.0}, {"name": "ce", "weight": 0.5},
                 {"name": "hidden_mse", "weight": 0.1}]
    train = {"max_steps": 3, "learning_rate": 1e-3, "log_every": 1, "progress": False}
    single = distill(tiny_run_config(tmp_path / "one", gpt2_tokenizer_dir, objective=objective, train={**train, "batch_size": 4}))

    config_path = tmp_path / "two.yaml"
    config_path.write_text(yaml.safe_dump(tiny_run_config(tmp_path / "two", gpt2_tokenizer_dir, objective=objective,
                                                          train={**train, "batch_size": 2})))
    torchrun = Path(sys.executable).with_name("torchrun")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         "-m", "lmdistill", "train", "--config", str(config_path)],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    expected = load_file(str(single.student_dir / "model.safetensors"))
    actual = load_file(str(tmp_path / "two" / "student" / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        # float32, gloo's reduction order differs from one process's sum: agreement to a few ulps of 1e-1 weights.
        torch.testing.assert_close(actual[name], value, rtol=1e-4, atol=5e-6)
    # Logged losses (total and each term) are global values, equal to the single process's.
    def logged(run):
        return [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    for one, two in zip(logged("one"), logged("two"), strict=True):
        for key in ("loss", "lr", "loss/forward_kl", "loss/ce", "loss/hidden_mse"):
            # float32 sums over 50,257 vocabulary entries in other chunk orders: ~1e-8 absolute on a 1e-3 KL.
            assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key
