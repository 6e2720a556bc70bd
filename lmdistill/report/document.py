"""A tiny document model (headings, paragraphs, tables, images, code) rendered to Markdown and self-contained HTML."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: bool = True  # columns after the first right-aligned (figures); False: every column left-aligned (text)


@dataclass
class Image:
    path: Path
    alt: str


@dataclass
class Code:
    text: str
    language: str = ""


Block = Heading | Paragraph | Table | Image | Code

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child, table.text th, table.text td { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; border-radius: 4px; }
"""


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run inside ``text``, so the config cannot close it early."""
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def render_markdown(blocks: list[Block]) -> str:
    """Markdown with images referenced by file name (they sit beside the report file)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_markdown_cell(c) for c in block.header) + " |"]
            lines.append("|" + "|".join([" --- "] + [" ---: " if block.numeric else " --- "] * (len(block.header) - 1)) + "|")
            lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.path.name})")
        elif isinstance(block, Code):
            fence = _fence(block.text)
            parts.append(f"{fence}{block.language}\n{block.text.rstrip(chr(10))}\n{fence}")
    return "\n\n".join(parts) + "\n"


def render_html(blocks: list[Block], title: str) -> str:
    """One self-contained HTML page: inline CSS, PNGs embedded as base64 data URIs, no external assets."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            header = "".join(f"<th>{html.escape(c)}</th>" for c in block.header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            opening = "<table>" if block.numeric else '<table class="text">'
            parts.append(f"{opening}<thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            encoded = base64.b64encode(block.path.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{html.escape(block.alt)}" src="data:image/png;base64,{encoded}">')
        elif isinstance(block, Code):
            parts.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


