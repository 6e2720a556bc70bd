"""``build_teacher_cache``: run the teacher once over the training examples and store its top-k signal in shards.

Resumable: shards cover fixed example ranges, each is written to a temporary file and renamed, and the manifest
(rewritten atomically after every shard) lists the completed ones; a rerun verifies and skips them.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from lmdistill.cache.format import (
    INDEX, MANIFEST, QUANTIZATIONS, bytes_per_position, encode_log_probs, file_sha256, shard_name,
)
from lmdistill.cache.manifest import IDENTITY_KEYS, data_fingerprint, new_manifest, read_manifest, teacher_fingerprint, tokenizer_fingerprint
from lmdistill.config import RunConfig
from lmdistill.errors import UserError
from lmdistill.files import replace_atomically
from lmdistill.losses.sparse import sparse_from_logits
from lmdistill.models.heads import model_inputs
from lmdistill.models.loading import load_tokenizer
from lmdistill.tasks import get_task
from lmdistill.tasks.base import require_cacheable
from lmdistill.models.build import load_teacher, tokenizer_source

log = logging.getLogger(__name__)

SHARD_BYTES = 256 << 20  # target shard size: a couple of them in the reader's LRU stay small


def build_teacher_cache(
    config: RunConfig,
    cache_dir: str | Path,
    top_k: int,
    *,
    quantize: str | None = None,
    examples_per_shard: int | None = None,
    batch_size: int | None = None,
    max_new_shards: int | None = None,
) -> Path:
    """Cache ``config.teachers[0]``'s top-k log-probs (T = 1), ids and tail mass for every training example.

    The examples are exactly the engine's (the task's ``load_datasets`` with the run's tokenizer and seed).
    ``max_new_shards`` stops after writing that many shards (time-sliced jobs; a rerun continues). Returns the dir.
    """
    if quantize not in QUANTIZATIONS:
        raise UserError(f"quantize={quantize!r} is not one of {', '.join(str(q) for q in QUANTIZATIONS)}")
    task = get_task(config.task)
    require_cacheable(task)
    teacher_config = config.teachers[0]
    if teacher_config.cache is not None:
        raise UserError("teacher is already a cache; give the live teacher (teacher.path or teacher.config) to build one")
    if teacher_config.tokenizer is not None:
        raise UserError("a teacher with its own tokenizer (teacher.tokenizer) cannot be cached yet; distil from it live")
    cache_dir = Path(cache_dir)
    tokenizer = load_tokenizer(tokenizer_source(config))
    examples, _ = task.load_datasets(config.data, tokenizer, config.seed)
    teacher = load_teacher(teacher_config, model_class=task.model_class, seed=config.seed)
    task.bind_model(teacher)  # seq2seq: decoder inputs built by the teacher's rule, as the run builds the student's
    vocab_size = teacher.get_output_embeddings().weight.shape[0]
    if not 1 <= top_k <= vocab_size:
        raise UserError(f"--top-k {top_k} must be between 1 and the teacher's vocabulary size {vocab_size}")
    per_shard = examples_per_shard or max(1, SHARD_BYTES // (bytes_per_position(top_k, quantize) * config.data.max_length))
    manifest = new_manifest(
        teacher=teacher_fingerprint(teacher_config), tokenizer=tokenizer_fingerprint(tokenizer),
        data=data_fingerprint(config.data, config.seed), examples=examples, top_k=top_k, quantize=quantize,
        vocab_size=vocab_size, examples_per_shard=per_shard,
    )
    manifest["shards"] = _completed_shards(cache_dir, manifest)
    cache_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher.to(device)
    done = {entry["name"] for entry in manifest["shards"]}
    written = 0
    for number, first in enumerate(range(0, len(examples), per_shard)):
        if shard_name(number) in done:
            continue
        if max_new_shards is not None and written >= max_new_shards:
            log.warning("stopped after %d new shards; run `lmdistill cache` again to continue", written)
            return cache_dir
        chunk = examples[first:first + per_shard]
        entry = _write_shard(cache_dir, number, first, chunk, teacher, task, tokenizer.pad_token_id, top_k, quantize,
                             batch_size or config.train.batch_size, device)
        manifest["shards"].append(entry)
        _write_manifest(cache_dir, manifest)
        written += 1
        log.info("cache shard %d: examples %d..%d", number, first, first + len(chunk) - 1)
    _write_index(cache_dir, examples, per_shard, task.cached_positions)
    manifest["complete"] = True
    _write_manifest(cache_dir, manifest)
    return cache_dir


def _completed_shards(cache_dir: Path, manifest: dict) -> list[dict]:
    """Shards of an earlier run of the same cache that are intact; another cache in the dir is an error."""
    if not (cache_dir / MANIFEST).is_file():
        return []
    previous = read_manifest(cache_dir)
    differing = [key for key in IDENTITY_KEYS if previous.get(key) != manifest[key]]
    if differing:
        raise UserError(
            f"{cache_dir} holds a teacher cache built differently ({', '.join(differing)}); choose another cache dir "
            "or delete that one"
        )
    intact = []
    for entry in previous["shards"]:
        path = cache_dir / entry["name"]
        if path.is_file() and path.stat().st_size == entry["bytes"] and file_sha256(path) == entry["sha256"]:
            intact.append(entry)
        else:
            log.warning("cache shard %s is missing or damaged; rewriting it", entry["name"])
    return intact


@torch.no_grad()
def _write_shard(cache_dir, number, first, examples, teacher, task, pad_id, top_k, quantize, batch_size, device) -> dict:
    """One shard: per example, the teacher's top-k at each of its ``task.cached_positions`` tokens (unaligned)."""
    log_probs, token_ids, tails, lengths = [], [], [], []
    for start in range(0, len(examples), batch_size):
        group = examples[start:start + batch_size]
        batch = {k: v.to(device) for k, v in task.collate(group, pad_id).items()}
        logits = teacher(**model_inputs(batch)).logits
        sparse = sparse_from_logits(logits.float(), top_k)
        for row, example in enumerate(group):
            length = len(example[task.cached_positions])
            log_probs.append(sparse.log_probs[row, :length].cpu())
            token_ids.append(sparse.token_ids[row, :length].cpu())
            tails.append(sparse.tail_log_mass[row, :length].cpu())
            lengths.append(length)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)
    tensors = {"token_ids": torch.cat(token_ids).contiguous(), "tail_log_mass": torch.cat(tails).float().contiguous(), "offsets": offsets}
    tensors.update(encode_log_probs(torch.cat(log_probs), quantize))
    final = cache_dir / shard_name(number)
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    save_file(tensors, str(temporary))  # no metadata: its key order is not stable, and shards must be byte-identical
    replace_atomically(temporary, final)
    return {"name": final.name, "first_example": first, "num_examples": len(examples), "positions": int(offsets[-1]),
            "bytes": final.stat().st_size, "sha256": file_sha256(final)}


def _write_index(cache_dir: Path, examples: list[dict], per_shard: int, positions: str) -> None:
    lengths = torch.tensor([len(example[positions]) for example in examples], dtype=torch.int64)
    shard = torch.arange(len(examples), dtype=torch.int64) // per_shard
    offset = torch.zeros_like(lengths)
    for number in range(int(shard.max()) + 1):
        members = (shard == number).nonzero().squeeze(-1)
        offset[members] = torch.cumsum(lengths[members], 0) - lengths[members]
    temporary = cache_dir / f".{INDEX}.{os.getpid()}.tmp"
    save_file({"shard": shard.to(torch.int32), "offset": offset, "length": lengths.to(torch.int32)}, str(temporary))
    replace_atomically(temporary, cache_dir / INDEX)


def _write_manifest(cache_dir: Path, manifest: dict) -> None:
    temporary = cache_dir / f".{MANIFEST}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    replace_atomically(temporary, cache_dir / MANIFEST)
