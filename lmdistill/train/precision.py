"""``train.precision``: ``auto`` trains in bf16 mixed precision where the device computes in bfloat16 natively.

On a CPU with AMX a bf16 autocast step of the demo's 18-layer student took 0.42x the float32 step's time with the full
49k-vocabulary CE, 0.60x with KD from the live teacher (benchmarks/mixed_precision.py) and 0.69x in the demo's cached
KD step (BENCHMARKS "Compression", "Mixed-precision step time"); without AMX or AVX512-BF16 the
CPU emulates bfloat16, which is usually slower than float32, so ``auto`` keeps float32 there.
"""

from __future__ import annotations

import torch


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` ("cuda" or "cpu") has bfloat16 arithmetic in hardware."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return False


def resolve_precision(setting: str, device_type: str | None = None) -> str:
    """accelerate's ``mixed_precision`` for a ``train.precision`` setting: ``auto`` -> "bf16" or "no" on
    ``device_type`` (default: the device a run trains on, CUDA where there is one)."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16(device_type or ("cuda" if torch.cuda.is_available() else "cpu")) else "no"
