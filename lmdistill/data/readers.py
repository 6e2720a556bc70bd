"""Read training records (one dict per example) from local files or a Hugging Face `datasets` id.

Local formats: ``.jsonl``, ``.json`` (a list of objects or ``{"data": [...]}``), ``.txt`` (one record
``{"text": ...}`` per blank-line-separated block), ``.csv``, ``.tsv`` and ``.parquet``; any text format may be
gzipped (``.jsonl.gz``, ``.txt.gz``; a ``.gz`` with no known inner suffix is read as ``.txt``). A directory reads
every supported file in it, sorted by name. A path that does not exist and does not look like a file is tried as a
`datasets` hub id. Local files are read with plain readers: ``datasets.load_dataset("json", ...)`` writes an
Arrow cache on every new file, which costs more than the parse itself at these sizes.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path
from typing import Any, Iterator

from lmdistill.config import ParallelFiles
from lmdistill.errors import UserError

TEXT_SUFFIXES = (".jsonl", ".json", ".txt", ".csv", ".tsv")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + (".parquet",)
_BLANK_LINES = re.compile(r"\n\s*\n")


def read_records(
    source: str | list[str] | ParallelFiles, *, dataset_split: str = "train", max_examples: int | None = None
) -> list[dict[str, Any]]:
    """All records of ``source`` (a path, a list of paths, a `datasets` id or parallel files), in order, at most
    ``max_examples``."""
    if isinstance(source, ParallelFiles):
        return read_parallel(source, max_examples=max_examples)
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    if not sources:
        raise UserError("data source is an empty list; give at least one file or `datasets` id")
    records: list[dict[str, Any]] = []
    for one in sources:
        remaining = None if max_examples is None else max_examples - len(records)
        if remaining is not None and remaining <= 0:
            break
        records.extend(_read_source(str(one), dataset_split, remaining))
    if not records:
        raise UserError(f"data set {_show(source)} has no records; point data.train/data.eval at non-empty files")
    return records


def source_names(source: str | list[str] | ParallelFiles) -> list[str]:
    """The paths or ids a data source names, in order (parallel files: the source file, then the target file)."""
    if isinstance(source, ParallelFiles):
        return [source.source, source.target]
    return [str(source)] if isinstance(source, (str, Path)) else [str(one) for one in source]


def read_parallel(files: ParallelFiles, *, max_examples: int | None = None) -> list[dict[str, str]]:
    """Line i of ``files.source`` and of ``files.target`` as ``{"source": ..., "target": ...}``; the files must have the
    same number of lines (a trailing empty line is ignored)."""
    sides = {}
    for side in ("source", "target"):
        path = Path(getattr(files, side)).expanduser()
        if not path.is_file():
            raise UserError(f"parallel {side} file {str(path)!r} not found; check data.train/data.eval.{side}")
        lines = _read_text(path).split("\n")
        sides[side] = lines[:-1] if lines and lines[-1] == "" else lines
    if len(sides["source"]) != len(sides["target"]):
        raise UserError(f"parallel files differ in length: {files.source} has {len(sides['source'])} lines, {files.target} "
                        f"has {len(sides['target'])}; give files whose line i translates line i")
    records = [{"source": s, "target": t} for s, t in zip(sides["source"], sides["target"])]
    if not records:
        raise UserError(f"parallel files {files.source} / {files.target} are empty; point at files with one sentence a line")
    return records[:max_examples] if max_examples is not None else records


def _show(source: str | list[str]) -> str:
    return repr(source) if isinstance(source, (str, Path)) else "[" + ", ".join(repr(str(s)) for s in source) + "]"


def _read_source(source: str, dataset_split: str, limit: int | None) -> list[dict[str, Any]]:
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _format_of(p, strict=False) is not None)
        if not files:
            raise UserError(f"{path}: directory holds no {'/'.join(SUPPORTED_SUFFIXES)} files; point at a data file")
        records: list[dict[str, Any]] = []
        for file in files:
            records.extend(_read_file(file, None if limit is None else limit - len(records)))
            if limit is not None and len(records) >= limit:
                break
        return records
    if path.exists():
        return _read_file(path, limit)
    if _looks_like_path(source):
        raise UserError(f"data file {source!r} not found; check the path in data.train/data.eval")
    return _read_hub(source, dataset_split, limit)


def _looks_like_path(source: str) -> bool:
    suffixes = [s.lower() for s in Path(source).suffixes]
    return (
        source.startswith(("/", ".", "~"))
        or "\\" in source
        or source.count("/") > 1
        or any(s in SUPPORTED_SUFFIXES + (".gz",) for s in suffixes)
    )


def file_format(path: Path, *, strict: bool = True) -> str | None:
    """The reader for ``path`` (a suffix from SUPPORTED_SUFFIXES, ``.gz`` looked through); None or a UserError when
    it has none."""
    return _format_of(path, strict=strict)


def _format_of(path: Path, *, strict: bool = True) -> str | None:
    """The reader for ``path``: a suffix from SUPPORTED_SUFFIXES, with ``.gz`` looked through."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        inner = suffixes[-2] if len(suffixes) > 1 else ""
        return inner if inner in TEXT_SUFFIXES else ".txt"
    if suffixes and suffixes[-1] in SUPPORTED_SUFFIXES:
        return suffixes[-1]
    if strict:
        raise UserError(
            f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; "
            f"convert it to one of {', '.join(SUPPORTED_SUFFIXES)} (optionally .gz)"
        )
    return None


def _read_file(path: Path, limit: int | None) -> list[dict[str, Any]]:
    kind = _format_of(path)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return table.slice(0, limit).to_pylist() if limit is not None else table.to_pylist()
    text = _read_text(path)
    if kind == ".jsonl":
        records = list(_jsonl_records(path, text, limit))
    elif kind == ".json":
        records = _json_records(path, text)
    elif kind == ".txt":
        records = [{"text": block.strip()} for block in _BLANK_LINES.split(text) if block.strip()]
    else:
        records = _delimited_records(text, delimiter="\t" if kind == ".tsv" else ",")
    return records[:limit] if limit is not None else records


def _read_text(path: Path) -> str:
    if path.suffix.lower() == ".gz":
        try:
            with gzip.open(path) as stream:
                raw = stream.read()
        except (gzip.BadGzipFile, EOFError):
            raise UserError(f"{path}: not a valid gzip file; re-compress it or drop the .gz suffix") from None
    else:
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path}: not UTF-8 text (bad byte at offset {error.start}); re-encode the file as UTF-8 "
            "(e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _jsonl_records(path: Path, text: str, limit: int | None) -> Iterator[dict[str, Any]]:
    count = 0
    for line_number, line in enumerate(text.split("\n"), start=1):
        if limit is not None and count >= limit:
            return
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{line_number}: malformed JSON line ({error.msg}); fix or remove that line") from None
        if not isinstance(record, dict):
            raise UserError(
                f"{path}:{line_number}: expected a JSON object per line, got {type(record).__name__}; "
                'write each example as {"field": value, ...}'
            )
        count += 1
        yield record


def _json_records(path: Path, text: str) -> list[dict[str, Any]]:
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: malformed JSON ({error.msg}); fix the file's syntax") from None
    if isinstance(content, dict) and isinstance(content.get("data"), list):
        content = content["data"]
    if not isinstance(content, list) or not all(isinstance(item, dict) for item in content):
        raise UserError(f'{path}: expected a JSON list of objects or {{"data": [...]}}; rewrite it in that shape')
    return content


def _delimited_records(text: str, *, delimiter: str) -> list[dict[str, Any]]:
    # TSV follows the GLUE convention (no quoting: a quote is a character); CSV uses standard quoting.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    csv.field_size_limit(2**31 - 1)  # long documents exceed the 128 KiB default
    return [dict(row) for row in csv.DictReader(text.split("\n"), delimiter=delimiter, quoting=quoting)]


def _read_hub(source: str, dataset_split: str, limit: int | None) -> list[dict[str, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(source, split=dataset_split)
    except Exception as error:  # network, unknown id, unknown split: all fixable by the user
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(
            f"{source!r} is neither a local file nor a loadable `datasets` id ({first_line}); "
            "check the path, the id, or data.dataset_split"
        ) from None
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.to_list()
