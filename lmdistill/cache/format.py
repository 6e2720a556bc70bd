"""The on-disk layout of a teacher-signal cache: file names, shard tensors, value quantisation, checksums.

A cache directory holds ``manifest.json`` (what was cached and from what, per-shard sizes and sha256),
``index.safetensors`` (per example: shard, offset, length; written when the cache is complete) and shards
``shard-00000.safetensors``... Each shard covers consecutive examples and stores, per position (P = its positions):

- ``token_ids``      (P, k) int32, the teacher's top-k tokens, by descending probability
- ``log_probs``      (P, k) float32 / float16 / uint8 codes (see quantisation), at temperature 1
- ``log_probs_low``, ``log_probs_step`` (P,) float32, uint8 only: value = low + code · step
- ``tail_log_mass``  (P,) float32, log(1 − Σ top-k p), −inf when k = V
- ``offsets``        (n + 1,) int64, example i of the shard is positions offsets[i]:offsets[i+1]

Position t of an example is the teacher's distribution for token t + 1 (unshifted, like the model's logits).

Quantisation errors (of each stored top-k log-probability; the tail is always float32; losses renormalise the
k + 1 buckets, so the stored distribution need not sum to exactly 1):

- ``None``:      float32, lossless w.r.t. the teacher's float32 log-softmax
- ``float16``:   |error| ≤ |log p|·2⁻¹¹ nats (≤ 0.005 nats at log p = −10), i.e. relative error of p ≤ 0.05 % there
- ``uint8``:     per position, codes span [max(min log p, top1 − 40), top1] linearly in 255 steps:
                 |error| ≤ (top1 − low)/510 nats ≤ 0.079 nats; values below top1 − 40 (p below e⁻⁴⁰ of the top) clip
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX = "index.safetensors"
QUANTIZATIONS = (None, "float16", "uint8")
UINT8_SPAN = 40.0  # nats kept below the top log-prob in uint8 mode


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def encode_log_probs(log_probs: torch.Tensor, quantize: str | None) -> dict[str, torch.Tensor]:
    """Stored tensors for (P, k) float32 top-k log-probs (descending along k)."""
    if quantize is None:
        return {"log_probs": log_probs.float().contiguous()}
    if quantize == "float16":
        return {"log_probs": log_probs.clamp(min=-65504.0).half().contiguous()}
    if quantize == "uint8":
        top = log_probs[:, :1]
        low = torch.maximum(log_probs.min(dim=-1, keepdim=True).values, top - UINT8_SPAN)
        step = ((top - low) / 255).clamp(min=1e-12)
        codes = ((log_probs.clamp(min=low) - low) / step).round().clamp(0, 255).to(torch.uint8)
        return {"log_probs": codes.contiguous(), "log_probs_low": low[:, 0].float().contiguous(),
                "log_probs_step": step[:, 0].float().contiguous()}
    raise AssertionError(quantize)


def decode_log_probs(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """(P, k) float32 log-probs from the stored tensors of :func:`encode_log_probs` (rows already sliced)."""
    values = tensors["log_probs"]
    if values.dtype == torch.uint8:
        return tensors["log_probs_low"].unsqueeze(-1) + values.float() * tensors["log_probs_step"].unsqueeze(-1)
    return values.float()


def bytes_per_position(top_k: int, quantize: str | None) -> int:
    """Stored bytes per token position: ids (4k) + values (4k / 2k / k + 8) + tail (4)."""
    values = {None: 4 * top_k, "float16": 2 * top_k, "uint8": top_k + 8}[quantize]
    return 4 * top_k + values + 4


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, streamed (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


