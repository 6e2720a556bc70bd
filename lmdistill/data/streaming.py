"""Corpora larger than memory: `datasets` streaming (``IterableDataset``), tokenised and packed on the fly, with a
position a checkpoint keeps so a resumed run continues at the same example.

The stream is read in order (a shuffle buffer would not resume exactly: shuffle the corpus beforehand), one record
at a time, into the same examples as :mod:`lmdistill.data.causal` builds in memory: text packed into blocks of
``max_length`` (documents end with EOS and may straddle blocks; a pass ends with its last block of at least 2
tokens), or one example per text / prompt-completion / chat record. At the end of the corpus the next pass starts
from its beginning. The position after an example is the dataset's ``state_dict()`` after the record it came from,
plus the tokens packed but not yet handed out.
"""

from __future__ import annotations

import copy
from collections import deque
from pathlib import Path
from typing import Any

from lmdistill.config import DataConfig
from lmdistill.data.causal import Example, build_causal_examples, document_tokens
from lmdistill.data.readers import SUPPORTED_SUFFIXES, file_format, read_records
from lmdistill.errors import UserError
from lmdistill.losses import IGNORE_INDEX

TOKENIZE_CHUNK = 64  # records tokenised in one call when packing
# file format -> (datasets builder, its options)
BUILDERS = {".jsonl": ("json", {}), ".json": ("json", {}), ".txt": ("text", {"sample_by": "paragraph"}),
            ".csv": ("csv", {}), ".tsv": ("csv", {"sep": "\t", "quoting": 3}), ".parquet": ("parquet", {})}


def _files(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and file_format(p, strict=False) is not None)
        if not files:
            raise UserError(f"{path}: directory holds no {'/'.join(SUPPORTED_SUFFIXES)} files; point at a data file")
        return files
    return [path]


def open_stream(source: str | list[str], dataset_split: str = "train"):
    """A streaming ``datasets.IterableDataset`` over local files (all of one format) or a `datasets` id."""
    import datasets

    sources = [source] if isinstance(source, str) else list(source)
    local = [s for s in sources if Path(s).expanduser().exists()]
    try:
        if not local:
            if len(sources) != 1:
                raise UserError("streaming reads one `datasets` id or local files; give data.train as one id")
            return datasets.load_dataset(sources[0], split=dataset_split, streaming=True)
        if len(local) != len(sources):
            missing = next(s for s in sources if s not in local)
            raise UserError(f"data file {missing!r} not found; check the paths in data.train")
        files = [file for one in local for file in _files(one)]
        formats = {BUILDERS[file_format(file)] == BUILDERS[file_format(files[0])] for file in files}
        if formats != {True}:
            raise UserError("streamed data.train files must share one format (jsonl/json, txt, csv, tsv or parquet)")
        builder, options = BUILDERS[file_format(files[0])]
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=True, **options)
    except UserError:
        raise
    except Exception as error:  # unknown id, no network, unreadable file: all fixable by the user
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"cannot stream {source!r} ({first_line}); check data.train and data.dataset_split") from None


class CausalExampleStream:
    """Causal examples from a streamed corpus, one at a time, with a resumable :meth:`position`."""

    def __init__(self, dataset, tokenizer, data: DataConfig, *, strip_text: bool = False):
        self.dataset, self.tokenizer, self.data = dataset, tokenizer, data
        self.strip_text = strip_text  # .txt files: blocks stripped, empty ones skipped, as the in-memory reader does
        self.packing = data.format == "text" and data.pack
        self._start = copy.deepcopy(dataset.state_dict())
        self._state, self._buffer, self._passes, self._records = self._start, [], 0, 0
        self._examples_this_pass = 0
        self._iterator, self._pending = None, deque()

    @property
    def passes(self) -> int:
        """Whole passes over the corpus finished so far."""
        return self._passes

    def position(self) -> dict[str, Any]:
        """Where the next example comes from (JSON-serialisable)."""
        return {"dataset": copy.deepcopy(self._state), "buffer": list(self._buffer), "passes": self._passes,
                "records": self._records, "examples_this_pass": self._examples_this_pass}

    def restore(self, position: dict[str, Any]) -> None:
        self._state = copy.deepcopy(position["dataset"])
        self._buffer, self._passes = list(position["buffer"]), position["passes"]
        self._records, self._examples_this_pass = position["records"], position["examples_this_pass"]
        self.dataset.load_state_dict(copy.deepcopy(self._state))
        self._iterator, self._pending = None, deque()

    def next_example(self) -> Example:
        length = self.data.max_length
        while True:
            if self.packing and len(self._buffer) >= length:
                block, self._buffer = self._buffer[:length], self._buffer[length:]
                return self._counted({"input_ids": block, "labels": list(block)})
            record = self._next_record()
            if record is None:  # end of a pass: the last short block, then the next pass
                block, self._buffer = self._buffer, []
                self._new_pass()
                if self.packing and len(block) >= 2:
                    return self._counted({"input_ids": block, "labels": list(block)})
                continue
            if self.packing:
                self._buffer += record
                continue
            examples = build_causal_examples([record], self.tokenizer, self.data)
            if examples:
                return self._counted(examples[0])

    def _text(self, record: dict[str, Any]) -> str:
        field = self.data.text_field
        if not isinstance(record.get(field), str):
            raise UserError(f"streamed record {self._records} has no text field {field!r}; set data.text_field to one of "
                            f"its keys: {', '.join(map(repr, record)) or '(none)'}")
        return record[field]

    def _counted(self, example: Example) -> Example:
        self._examples_this_pass += 1
        return example

    def _next_record(self) -> dict[str, Any] | list[int] | None:
        """The next record (packing: its document tokens), setting the position to just after it."""
        if not self.packing:
            return self._read_record()
        if not self._pending:
            # Tokenise records in chunks (one tokenizer call is much faster than many); each keeps the dataset
            # state after it, so a position never depends on records read ahead.
            chunk = []
            while len(chunk) < TOKENIZE_CHUNK:
                record = self._read_record()
                if record is None:
                    break
                chunk.append((self._text(record), self._state, self._records))
            tokens = document_tokens(self.tokenizer, [text for text, _, _ in chunk])
            self._pending = deque((ids, state, records) for ids, (_, state, records) in zip(tokens, chunk))
            if not self._pending:
                return None
        ids, self._state, self._records = self._pending.popleft()
        return ids

    def _read_record(self) -> dict[str, Any] | None:
        limit = self.data.max_examples
        while limit is None or self._records < limit:
            if self._iterator is None:
                self._iterator = iter(self.dataset)
            try:
                record = next(self._iterator)
            except StopIteration:
                return None
            self._records += 1
            self._state = self.dataset.state_dict()
            if self.strip_text and isinstance(record.get("text"), str):
                if not record["text"].strip():
                    continue
                record = {**record, "text": record["text"].strip()}
            return record
        return None

    def _new_pass(self) -> None:
        if self._examples_this_pass == 0:
            raise UserError("the streamed corpus gave no training example in a whole pass; check data.train, its "
                            "fields and data.max_length")
        self._passes, self._records, self._examples_this_pass = self._passes + 1, 0, 0
        self._state = copy.deepcopy(self._start)
        self.dataset.load_state_dict(copy.deepcopy(self._start))
        self._iterator, self._pending = None, deque()


class StreamedBatches:
    """Global batches read in order from a :class:`CausalExampleStream` (every process reads the whole stream and
    takes its own slice, so any number of processes sees the batches one process would)."""

    def __init__(self, stream: CausalExampleStream, global_batch: int):
        self.stream, self.examples_per_step = stream, global_batch
        self._next_step = 0
        self._positions = {0: stream.position()}  # position before step s, for the last two steps

    def global_batch(self, step: int) -> tuple[list[int], list[dict]]:
        if step != self._next_step:
            raise RuntimeError(f"a streamed corpus is read in order: step {step} asked for, step {self._next_step} next")
        size = self.examples_per_step
        examples = [self.stream.next_example() for _ in range(size)]
        self._next_step += 1
        self._positions = {step: self._positions[step], step + 1: self.stream.position()}
        return list(range(step * size, (step + 1) * size)), examples

    def position(self, step: int) -> dict[str, Any]:
        if step not in self._positions:
            raise RuntimeError(f"no stream position kept for step {step} (kept: {sorted(self._positions)})")
        return self._positions[step]

    def restore(self, position: dict[str, Any] | None, step: int) -> None:
        if position is None:
            raise UserError("this checkpoint holds no position in the streamed corpus (it was saved by a run that "
                            "did not stream); resume with data.streaming: false or start a new output_dir")
        self.stream.restore(position)
        self._next_step, self._positions = step, {step: self.stream.position()}


def preview(stream: CausalExampleStream, count: int) -> list[Example]:
    """The first ``count`` examples of a fresh stream (for preflight's checks), leaving ``stream`` where it was."""
    start = stream.position()
    examples = []
    try:
        for _ in range(count):
            examples.append(stream.next_example())
            if stream.passes:  # the whole corpus is shorter than the preview
                break
    finally:
        stream.restore(start)
    return [example for example in examples if any(label != IGNORE_INDEX for label in example["labels"][1:])]


PREVIEW_EXAMPLES = 256  # examples of a streamed corpus that preflight checks (token range, loss fraction, lengths)


def stream_causal_examples(data: DataConfig, tokenizer) -> CausalExampleStream:
    """The training stream of ``data`` (``data.streaming``): ``data.train`` opened with `datasets` streaming."""
    sources = [data.train] if isinstance(data.train, str) else list(data.train)
    plain_text = all(Path(s).expanduser().exists() and all(file_format(f) == ".txt" for f in _files(s)) for s in sources)
    return CausalExampleStream(open_stream(data.train, data.dataset_split), tokenizer, data, strip_text=plain_text)


def load_streamed_datasets(data: DataConfig, tokenizer) -> tuple[list[Example], list[Example] | None]:
    """(the first examples of the training stream, the eval examples read in memory from ``data.eval``)."""
    train = preview(stream_causal_examples(data, tokenizer), PREVIEW_EXAMPLES)
    if data.eval is None:
        return train, None
    evaluation = build_causal_examples(read_records(data.eval, dataset_split=data.dataset_split,
                                                    max_examples=data.max_examples), tokenizer, data)
    if not evaluation:
        raise UserError("no eval examples left after tokenisation; raise data.max_length or check data.eval")
    return train, evaluation
