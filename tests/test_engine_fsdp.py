"""Sharded training: FSDP2 through accelerate (the shipped configs/accelerate/fsdp2.yaml) on 2 CPU processes (gloo)
ends with the weights of a 1-process run on the same global batch, saves sharded checkpoints and resumes exactly."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator
from safetensors.torch import load_file

from conftest import tiny_run_config
from lmdistill import distill
from lmdistill.errors import UserError
from lmdistill.train import distributed

REPO = Path(__file__).resolve().parents[1]
FSDP2_CONFIG = REPO / "configs" / "accelerate" / "fsdp2.yaml"
OBJECTIVE = [{"name": "forward_kl", "weight": 1.0, "temperature": 2.0}, {"name": "ce", "weight": 0.5},
             {"name": "hidden_mse", "weight": 0.1}]
TRAIN = {"max_steps": 4, "learning_rate": 1e-3, "log_every": 1, "save_every": 2, "keep_checkpoints": 3,
         "progress": False}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch_fsdp2(config_path: Path, *extra: str) -> None:
    accelerate = Path(sys.executable).with_name("accelerate")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run(
        [str(accelerate), "launch", "--config_file", str(FSDP2_CONFIG), "--num_processes", "2",
         "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
         "-m", "lmdistill", "train", "--config", str(config_path), *extra],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "FSDP2 on 2 CPU processes" in completed.stderr  # sharded, not silently data parallel


def _assert_same_weights(expected_dir: Path, actual_dir: Path) -> None:
    expected, actual = load_file(str(expected_dir / "model.safetensors")), load_file(str(actual_dir / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        # float32; gloo's reduce-scatter sums in another order than one process's backward.
        torch.testing.assert_close(actual[key], value, rtol=1e-4, atol=5e-6)


def _logged(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def test_fsdp2_on_two_processes_equals_one_process_and_resumes_exactly(tmp_path, gpt2_tokenizer_dir):
    single = distill(tiny_run_config(tmp_path / "one", gpt2_tokenizer_dir, objective=OBJECTIVE,
                                     train={**TRAIN, "batch_size": 4}))
    sharded_dir = tmp_path / "two"
    config_path = tmp_path / "two.yaml"
    config_path.write_text(yaml.safe_dump(tiny_run_config(sharded_dir, gpt2_tokenizer_dir, objective=OBJECTIVE,
                                                          train={**TRAIN, "batch_size": 2})))
    _launch_fsdp2(config_path)
    _assert_same_weights(single.student_dir, sharded_dir / "student")
    for one, two in zip(_logged(tmp_path / "one"), _logged(sharded_dir), strict=True):
        for key in ("loss", "lr", "loss/forward_kl", "loss/ce", "loss/hidden_mse"):
            assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key

    # The checkpoint is accelerate's sharded FSDP state (torch.distributed.checkpoint, a file per process).
    middle = sharded_dir / "checkpoints" / "step-00000002"
    assert len(list((middle / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2
    assert len(list((middle / "optimizer_0").glob("*.distcp"))) == 2

    # As if the run had died after step 2: only that checkpoint is left; --resume continues from it.
    shutil.rmtree(sharded_dir / "checkpoints" / "step-00000004")
    shutil.rmtree(sharded_dir / "student")
    _launch_fsdp2(config_path, "--resume")
    _assert_same_weights(single.student_dir, sharded_dir / "student")
    resumed = [row for row in _logged(sharded_dir) if row["step"] > 2][-2:]
    for one, two in zip(_logged(tmp_path / "one")[2:], resumed, strict=True):
        assert (two["step"], two["loss"]) == (one["step"], pytest.approx(one["loss"], rel=1e-5, abs=1e-7))


def test_a_sharded_student_refuses_sampling_with_one_line(monkeypatch):
    accelerator = Accelerator(cpu=True)
    monkeypatch.setattr(type(accelerator), "distributed_type", property(lambda self: distributed.DistributedType.FSDP))
    with pytest.raises(UserError, match="on_policy sampling does not run with an FSDP-sharded student"):
        distributed.check_sharding_supports(accelerator, samples_in_training=True, samples_in_eval=False)
    with pytest.raises(UserError, match="train.eval_samples"):
        distributed.check_sharding_supports(accelerator, samples_in_training=False, samples_in_eval=True)
    distributed.check_sharding_supports(accelerator, samples_in_training=False, samples_in_eval=False)


def test_without_an_fsdp_launch_nothing_is_switched(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    accelerator = Accelerator(cpu=True)
    distributed.shard_on_cpu_if_configured(accelerator)
    assert accelerator.distributed_type != distributed.DistributedType.FSDP
