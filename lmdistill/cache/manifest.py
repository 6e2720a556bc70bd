"""What a cache was built from (teacher, tokenizer, data, examples) and the checks a run makes against it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from lmdistill.cache.format import FORMAT_VERSION, MANIFEST, file_sha256
from lmdistill.config import DataConfig, RunConfig, TeacherConfig
from lmdistill.data.readers import source_names
from lmdistill.errors import UserError
from lmdistill.models.build import named_tokenizer_source, tokenizer_source


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def teacher_fingerprint(teacher: TeacherConfig) -> dict[str, Any]:
    """The teacher's source: its path (with the files' names and sizes when local) or a hash of its config."""
    record: dict[str, Any] = {"path": teacher.path, "dtype": teacher.dtype}
    if teacher.config is not None:
        record["config_sha256"] = _sha256_json(teacher.config)
    elif teacher.path is not None and Path(teacher.path).is_dir():
        record["files"] = {p.name: p.stat().st_size for p in sorted(Path(teacher.path).iterdir()) if p.is_file()}
    return record


def tokenizer_fingerprint(tokenizer) -> dict[str, Any]:
    """Name, vocabulary size (with added tokens) and a hash of the token -> id map."""
    vocab = sorted(tokenizer.get_vocab().items())
    return {"name": str(getattr(tokenizer, "name_or_path", "")), "vocab_size": len(tokenizer), "vocab_sha256": _sha256_json(vocab)}


def _source_files(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path] if path.is_file() else []


def data_fingerprint(data: DataConfig, seed: int) -> dict[str, Any]:
    """The data config, the seed and each training source file's size, mtime and sha256 (hub ids by name)."""
    sources = source_names(data.train)
    files = []
    for source in sources:
        found = _source_files(source)
        if not found:
            files.append({"id": source, "split": data.dataset_split})
        for path in found:
            stat = path.stat()
            files.append({"path": str(path.resolve()), "bytes": stat.st_size, "mtime": stat.st_mtime, "sha256": file_sha256(path)})
    return {"config": data.model_dump(mode="json"), "seed": seed, "sources": files}


def examples_sha256(examples: list[dict[str, list[int]]]) -> str:
    """A hash of the tokenised examples (ids and labels, in order): the authority on "same data"."""
    digest = hashlib.sha256()
    for example in examples:
        for key in ("input_ids", "labels"):
            values = torch.tensor(example[key], dtype=torch.int64)
            digest.update(len(values).to_bytes(8, "little"))
            digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def new_manifest(*, teacher, tokenizer, data, examples, top_k: int, quantize, vocab_size: int, examples_per_shard: int) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "top_k": top_k,
        "quantize": quantize,
        "vocab_size": vocab_size,
        "teacher": teacher,
        "tokenizer": tokenizer,
        "data": data,
        "num_examples": len(examples),
        "examples_sha256": examples_sha256(examples),
        "examples_per_shard": examples_per_shard,
        "shards": [],  # completed shards only: {name, first_example, num_examples, positions, bytes, sha256}
        "complete": False,
    }


IDENTITY_KEYS = ("format_version", "top_k", "quantize", "vocab_size", "teacher", "tokenizer", "num_examples", "examples_sha256", "examples_per_shard")


def read_manifest(cache_dir: Path) -> dict[str, Any]:
    path = cache_dir / MANIFEST
    if not path.is_file():
        raise UserError(f"{cache_dir} is not a teacher cache (no {MANIFEST}); build one with `lmdistill cache --config run.yaml`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid JSON; rebuild the cache with `lmdistill cache`") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{cache_dir} has cache format {manifest.get('format_version')}, this lmdistill reads {FORMAT_VERSION}; rebuild it with `lmdistill cache`")
    return manifest


def check_run_matches(manifest: dict[str, Any], cache_dir: Path, tokenizer, examples: list[dict]) -> None:
    """UserError when the run's tokenizer or training examples are not those the cache was built from."""
    built, now = manifest["tokenizer"], tokenizer_fingerprint(tokenizer)
    if (built["vocab_size"], built["vocab_sha256"]) != (now["vocab_size"], now["vocab_sha256"]):
        raise UserError(
            f"teacher cache {cache_dir} was built with tokenizer {built['name']!r} ({built['vocab_size']} tokens), this run "
            f"uses {now['name']!r} ({now['vocab_size']} tokens); set the same `tokenizer:` or rebuild the cache with `lmdistill cache`"
        )
    for source in manifest["data"]["sources"]:
        path = Path(source.get("path", ""))
        if "path" in source and not (path.is_file() and path.stat().st_size == source["bytes"]
                                     and (path.stat().st_mtime == source["mtime"] or file_sha256(path) == source["sha256"])):
            raise UserError(f"data file {path} changed (or is gone) since teacher cache {cache_dir} was built; rebuild it with `lmdistill cache`")
    if len(examples) != manifest["num_examples"] or examples_sha256(examples) != manifest["examples_sha256"]:
        raise UserError(
            f"this run's {len(examples)} training examples are not the {manifest['num_examples']} that teacher cache {cache_dir} "
            "holds (other data files, data settings or seed); use the cache's data config or rebuild it with `lmdistill cache`"
        )


def run_tokenizer_source(config: RunConfig) -> str:
    """Where a run's tokenizer comes from (:func:`lmdistill.models.build.tokenizer_source`); where the settings name
    none (e.g. a student pruned from a cache's teacher), the tokenizer the teacher cache was built with, as its
    manifest records it."""
    cache = next((teacher.cache for teacher in config.teachers if teacher.cache is not None), None)
    recorded = read_manifest(Path(cache))["tokenizer"]["name"] if cache and named_tokenizer_source(config) is None else None
    return tokenizer_source(config, fallback=recorded)
