"""BENCHMARKS.md: replace one benchmark's section (or append it), leaving every other section as it is."""

from __future__ import annotations

from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def replace_section(heading: str, markdown: str, path: Path = PATH) -> None:
    """Put ``markdown`` (which starts with ``heading``, a ``## `` line) in place of that section, up to the next
    ``## `` heading; append it when the file has none. The file is read right before writing: other benchmarks may
    have written their sections meanwhile."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    body = markdown.rstrip("\n") + "\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + body + (text[end:] if end >= 0 else "")
    path.write_text(text, encoding="utf-8")
