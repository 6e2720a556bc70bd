"""Atomic file writes: a reader (or a crash) sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _umask_now() -> int:
    """The process umask, read without changing it (Linux /proc); elsewhere the one this module saw at import."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return _UMASK_AT_IMPORT


def _umask_at_import() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_at_import()


def temporary_beside(path: Path) -> tuple[int, Path]:
    """A new temporary file in ``path``'s folder (an open OS handle and its path), with the permissions ``open()``
    would give ``path`` (mkstemp's own 0600 would make every atomically written output private to its owner)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(handle, 0o666 & ~_umask_now())
    return handle, Path(temporary)


def replace_atomically(temporary: Path, final: Path) -> None:
    """fsync ``temporary`` and rename it onto ``final``."""
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, final)


def write_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = temporary_beside(path)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        replace_atomically(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
