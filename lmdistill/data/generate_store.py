"""The files of a generation run: rows appended with fsync, a torn last line dropped, a manifest that pins the config.

Beside ``OUT.jsonl`` (kept rows, directly usable as training data) live ``OUT.jsonl.filtered`` (one
``{"prompt_index", "sample_index", "filtered": true, "reason"}`` line per dropped row, so a resumed run neither
regenerates nor counts them twice; its suffix keeps it out of directory reads) and ``generation_manifest.json``
(``{"outputs": {"OUT.jsonl": {"fingerprint", "config"}}}``). Point ``data.train`` at the file, not the directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from lmdistill.errors import UserError

log = logging.getLogger(__name__)

MANIFEST_NAME = "generation_manifest.json"


def filtered_path(output: Path) -> Path:
    return output.with_name(output.name + ".filtered")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of ``path`` ([] if absent); a last line without its newline is cut off the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", path, len(data) - end)
        with open(path, "r+b") as stream:
            stream.truncate(end)
            stream.flush()
            os.fsync(stream.fileno())
    rows = []
    for number, line in enumerate(data[:end].decode("utf-8").split("\n")[:-1], start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{number}: malformed JSON line inside the output; delete the file to regenerate it") from None
        if not isinstance(row, dict) or "prompt_index" not in row or "sample_index" not in row:
            raise UserError(f"{path}:{number}: not a generation row; write generations to a new output file")
        rows.append(row)
    return rows


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows as JSON lines and fsync, so a crash loses at most the line being written."""
    if not rows:
        return
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def check_manifest(output: Path, settings: dict[str, Any], has_rows: bool) -> None:
    """Record ``settings`` for ``output`` in the manifest, or refuse when rows exist that other settings made."""
    manifest_path = output.parent / MANIFEST_NAME
    manifest: dict[str, Any] = {"outputs": {}}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            manifest["outputs"]  # noqa: B018 - shape check
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{manifest_path} is corrupt; delete it together with {output.name} to start over") from None
    recorded = manifest["outputs"].get(output.name)
    new_fingerprint = fingerprint(settings)
    if recorded is not None and has_rows and recorded.get("fingerprint") != new_fingerprint:
        changed = sorted(_changed_keys(recorded.get("config", {}), settings))
        raise UserError(
            f"{output} was generated with a different config (changed: {', '.join(changed) or 'unknown'}); "
            "write to a new output file, or delete this one to regenerate"
        )
    if has_rows and recorded is None:
        raise UserError(f"{output} has rows but no entry in {manifest_path}; write to a new output file")
    manifest["outputs"][output.name] = {"fingerprint": new_fingerprint, "config": settings}
    temporary = manifest_path.with_name(manifest_path.name + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, manifest_path)


def _changed_keys(old: Any, new: Any, prefix: str = "") -> set[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys: set[str] = set()
        for key in set(old) | set(new):
            keys |= _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return keys
    return set() if old == new else {prefix.rstrip(".")}
