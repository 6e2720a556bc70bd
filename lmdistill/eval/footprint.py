"""Model size and speed: parameter count, bytes on disk, forward-pass latency, decoding speed."""

from __future__ import annotations

import json
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


def measure_decoding(model: torch.nn.Module, prompt_ids: torch.Tensor, *, new_tokens: int = 32) -> float:
    """Greedy decoding speed in new tokens per second: ``new_tokens`` tokens after ``prompt_ids`` (1, S) with the KV
    cache, every token generated (no early stop at an end-of-sequence token), one timed run after a warm-up."""
    device = next(model.parameters()).device
    prompt_ids = prompt_ids.to(device)
    settings = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "num_beams": 1,
                "pad_token_id": 0, "attention_mask": torch.ones_like(prompt_ids)}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model.generate(prompt_ids, **{**settings, "max_new_tokens": 2, "min_new_tokens": 2})
            _synchronize(device)
            start = time.perf_counter()
            model.generate(prompt_ids, **settings)
            _synchronize(device)
            elapsed = time.perf_counter() - start
    finally:
        model.train(was_training)
    return new_tokens / elapsed


def shape_key(model: torch.nn.Module) -> str:
    """What a model's speed depends on: its class and config without names and paths (equal for two students of
    one shape, whatever their weights)."""
    settings = model.config.to_dict()
    for key in ("_name_or_path", "name_or_path", "transformers_version", "architectures", "_commit_hash"):
        settings.pop(key, None)
    return type(model).__name__ + json.dumps(settings, sort_keys=True, default=str)


def measure_speeds(models: dict[str, torch.nn.Module], prompt_ids: torch.Tensor, latency_ids: torch.Tensor, *,
                   rounds: int = 3, new_tokens: int = 32) -> dict[str, dict[str, float]]:
    """Forward latency and decoding speed per model, measured once per *shape* (models of one shape share the
    figures) in ``rounds`` interleaved rounds, the median of each kept: a machine that slows down for a while
    slows every shape alike, instead of whichever model happened to run then."""
    by_shape: dict[str, str] = {}
    for name, model in models.items():
        by_shape.setdefault(shape_key(model), name)
    latencies: dict[str, list[dict[str, float]]] = {name: [] for name in by_shape.values()}
    decoding: dict[str, list[float]] = {name: [] for name in by_shape.values()}
    for _ in range(rounds):
        for name in by_shape.values():
            top = models[name].config.vocab_size - 1  # speed does not depend on which tokens: keep ids in range
            latencies[name].append(measure_latency(models[name], latency_ids.clamp(max=top), warmup=1, repeats=3))
            decoding[name].append(measure_decoding(models[name], prompt_ids.clamp(max=top), new_tokens=new_tokens))
    results = {}
    for name, model in models.items():
        measured = by_shape[shape_key(model)]
        results[name] = {
            "latency_ms_per_example": statistics.median(r["latency_ms_per_example"] for r in latencies[measured]),
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in latencies[measured]),
            "decode_tokens_per_second": statistics.median(decoding[measured]),
        }
    return results
