"""Model size and speed: parameter count, bytes on disk, forward-pass latency."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_model


def model_footprint(model: torch.nn.Module) -> dict[str, int]:
    """Parameter count and the size of the model saved as safetensors.

    ``parameters``: Σ numel over ``model.parameters()``, which yields a tied parameter (e.g. input embeddings
    shared with the LM head) once. ``size_on_disk_bytes``: the size of one ``.safetensors`` file written by
    ``safetensors.torch.save_model`` to a temporary directory (weights, buffers saved in the state dict,
    shared tensors once, plus the small JSON header), in the model's current dtypes.
    """
    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(prefix="lmdistill-footprint-") as tmp:
        path = Path(tmp) / "model.safetensors"
        save_model(model, str(path))
        size_on_disk_bytes = path.stat().st_size
    return {"parameters": parameters, "size_on_disk_bytes": size_on_disk_bytes}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: torch.nn.Module, input_ids: torch.Tensor, *, warmup: int = 2, repeats: int = 5
) -> dict[str, float]:
    """Median wall-clock time of one forward pass over ``input_ids`` under ``torch.inference_mode``.

    Shapes: ``input_ids`` (B, S), moved to the model's device (compare models on the same device; the report uses
    CPU). Returns ``latency_ms_per_example`` = 1000·median / B and ``tokens_per_second`` = B·S / median.
    The median over ``repeats`` timed runs, after ``warmup`` untimed ones, resists one-off stalls.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    batch_size, seq_len = input_ids.shape
    was_training = model.training
    model.eval()
    timings = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(input_ids=input_ids)
            _synchronize(device)
            for _ in range(repeats):
                start = time.perf_counter()
                model(input_ids=input_ids)
                _synchronize(device)
                timings.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    median = statistics.median(timings)
    return {
        "latency_ms_per_example": 1000.0 * median / batch_size,
        "tokens_per_second": batch_size * seq_len / median,
    }
