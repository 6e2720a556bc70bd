"""``TeacherCache``: read a teacher-signal cache shard by shard (memory-mapped, at most a few shards open)."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from lmdistill.cache.format import INDEX, decode_log_probs, file_sha256, shard_name
from lmdistill.cache.manifest import check_run_matches, read_manifest
from lmdistill.errors import UserError
from lmdistill.losses.sparse import SparseTeacher

_REBUILD = "rebuild it with `lmdistill cache --config run.yaml` (damaged shards are rewritten)"


class TeacherCache:
    """A complete cache made by :func:`~lmdistill.cache.build_teacher_cache`.

    Shards are checked (size, then sha256) the first time they are opened; at most ``max_open_shards`` stay open
    (least recently used first out), so memory does not grow with the data set (the index keeps 16 bytes per example).
    """

    def __init__(self, path: str | Path, *, max_open_shards: int = 2):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if not self.manifest["complete"]:
            raise UserError(
                f"teacher cache {self.path} is incomplete ({len(self.manifest['shards'])} shards written); finish it "
                "with `lmdistill cache --config run.yaml` (it resumes)"
            )
        self.top_k: int = self.manifest["top_k"]
        self.vocab_size: int = self.manifest["vocab_size"]
        self.num_examples: int = self.manifest["num_examples"]
        self._shards = {entry["name"]: entry for entry in self.manifest["shards"]}
        try:
            index = load_file(str(self.path / INDEX))
        except (OSError, SafetensorError):  # truncated or missing index: a one-line error, not a traceback
            raise UserError(f"cache index {self.path / INDEX} is unreadable (truncated or missing); {_REBUILD}") from None
        self._shard_of, self._offset, self._length = index["shard"], index["offset"], index["length"]
        self._open: OrderedDict[int, object] = OrderedDict()
        self._verified: set[int] = set()
        self._max_open = max(1, max_open_shards)

    def validate(self, tokenizer, examples: list[dict]) -> None:
        """UserError when ``tokenizer`` or the run's training ``examples`` are not those the cache was built from."""
        check_run_matches(self.manifest, self.path, tokenizer, examples)

    def _shard(self, number: int):
        if number in self._open:
            self._open.move_to_end(number)
            return self._open[number]
        entry = self._shards[shard_name(number)]
        path = self.path / entry["name"]
        if number not in self._verified:
            size = path.stat().st_size if path.is_file() else 0
            if size != entry["bytes"]:
                raise UserError(f"cache shard {path} is truncated or missing ({size} of {entry['bytes']} bytes); {_REBUILD}")
            if file_sha256(path) != entry["sha256"]:
                raise UserError(f"cache shard {path} is corrupted (sha256 differs from the manifest); {_REBUILD}")
            self._verified.add(number)
        self._open[number] = safe_open(str(path), framework="pt")
        while len(self._open) > self._max_open:
            self._open.popitem(last=False)
        return self._open[number]

    def example(self, index: int) -> SparseTeacher:
        """Example ``index``'s signal: log_probs (L, k) float32, token_ids (L, k) int32, tail_log_mass (L,)."""
        if not 0 <= index < self.num_examples:
            raise IndexError(f"example {index} outside the cache's {self.num_examples} examples")
        handle = self._shard(int(self._shard_of[index]))
        start = int(self._offset[index])
        stop = start + int(self._length[index])
        rows = {name: handle.get_slice(name)[start:stop] for name in handle.keys() if name != "offsets"}
        return SparseTeacher(decode_log_probs(rows), rows["token_ids"], rows["tail_log_mass"].float())

    def teacher_batch(self, example_indices: list[int], seq_len: int) -> SparseTeacher:
        """Signals of a batch, right-padded to ``seq_len`` like the collated inputs: (B, S, k), (B, S, k), (B, S).

        Unshifted: position t is the teacher's distribution for token t + 1. Padding holds a harmless uniform top-k
        (distinct ids, tail −inf) so losses stay finite there; the loss mask removes it.
        """
        k = self.top_k
        batch = len(example_indices)
        log_probs = torch.full((batch, seq_len, k), -math.log(k), dtype=torch.float32)
        token_ids = torch.arange(k, dtype=torch.int32).expand(batch, seq_len, k).clone()
        tails = torch.full((batch, seq_len), -math.inf, dtype=torch.float32)
        for row, index in enumerate(example_indices):
            signal = self.example(int(index))
            length = min(signal.log_probs.shape[0], seq_len)
            log_probs[row, :length] = signal.log_probs[:length]
            token_ids[row, :length] = signal.token_ids[:length]
            tails[row, :length] = signal.tail_log_mass[:length]
        return SparseTeacher(log_probs, token_ids, tails)
