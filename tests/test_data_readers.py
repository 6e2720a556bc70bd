"""read_records: every file type, lists/directories, max_examples, the datasets-id branch and each UserError."""

from __future__ import annotations

import gzip
import json

import pytest

from lmdistill.data.readers import read_records
from lmdistill.errors import UserError

from conftest import require_shared_data

RECORDS = [{"prompt": "a, b", "completion": "c"}, {"prompt": "d\"e", "completion": "f"}, {"prompt": "g", "completion": "h"}]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORDS[0]) + "\n\n  \n" + json.dumps(RECORDS[1]) + "\n", encoding="utf-8")
    assert read_records(str(path)) == RECORDS[:2]


def test_json_list_and_data_key(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps(RECORDS), encoding="utf-8")
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": RECORDS, "version": 1}), encoding="utf-8")
    assert read_records(str(tmp_path / "list.json")) == RECORDS
    assert read_records(str(tmp_path / "wrapped.json")) == RECORDS


def test_txt_blocks_are_stripped_and_empty_blocks_dropped(tmp_path):
    path = tmp_path / "stories.txt"
    path.write_bytes("\ufeff  One\nstory. \r\n\r\n\r\n  Two \n \t \n\n\nThree\n\n".encode("utf-8"))
    assert read_records(str(path)) == [{"text": "One\nstory."}, {"text": "Two"}, {"text": "Three"}]


def test_gzip_text_formats(tmp_path):
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in RECORDS))
    with gzip.open(tmp_path / "lines.en.gz", "wt", encoding="utf-8") as f:
        f.write("first\n\nsecond\n")
    assert read_records(str(tmp_path / "d.jsonl.gz")) == RECORDS
    assert read_records(str(tmp_path / "lines.en.gz")) == [{"text": "first"}, {"text": "second"}]


def test_csv_with_quoting_and_tsv_without(tmp_path):
    (tmp_path / "d.csv").write_text('prompt,completion\n"a, b",c\n"d""e",f\ng,h\n', encoding="utf-8")
    (tmp_path / "d.tsv").write_text('sentence\tlabel\nit \'s "fine" \t1\nno\t0\n', encoding="utf-8")
    assert read_records(str(tmp_path / "d.csv")) == RECORDS
    assert read_records(str(tmp_path / "d.tsv")) == [
        {"sentence": 'it \'s "fine" ', "label": "1"},
        {"sentence": "no", "label": "0"},
    ]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "d.parquet")
    assert read_records(str(tmp_path / "d.parquet")) == RECORDS
    assert read_records(str(tmp_path / "d.parquet"), max_examples=2) == RECORDS[:2]


def test_list_directory_and_max_examples(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", RECORDS[:2])
    write_jsonl(tmp_path / "b.jsonl", RECORDS[2:])
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    files = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert read_records(files) == RECORDS
    assert read_records(files, max_examples=1) == RECORDS[:1]
    assert read_records(files, max_examples=3) == RECORDS
    assert read_records(str(tmp_path)) == RECORDS
    assert read_records(str(tmp_path), max_examples=2) == RECORDS[:2]


def test_hub_id_branch_calls_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list(RECORDS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert read_records("someone/some-data", dataset_split="validation", max_examples=2) == RECORDS[:2]
    assert calls == [("someone/some-data", "validation")]


def test_hub_failure_is_a_user_error(monkeypatch):
    import datasets

    def offline(name, split):
        raise ConnectionError("Couldn't reach the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"'someone/data' is neither a local file nor .*Couldn't reach the Hub\)"):
        read_records("someone/data")


def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(UserError, match=r"data file '.*nope\.jsonl' not found; check the path"):
        read_records(missing)


def test_unsupported_extension(tmp_path):
    (tmp_path / "d.xlsx").write_bytes(b"PK")
    with pytest.raises(UserError, match=r"d\.xlsx: unsupported file type '\.xlsx'; convert it to one of \.jsonl"):
        read_records(str(tmp_path / "d.xlsx"))


def test_non_utf8_names_file_and_fix(tmp_path):
    (tmp_path / "latin.txt").write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin\.txt: not UTF-8 text \(bad byte at offset 3\); re-encode the file as UTF-8"):
        read_records(str(tmp_path / "latin.txt"))


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl:3: malformed JSON line"):
        read_records(str(path))
    (tmp_path / "list.jsonl").write_text('["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"list\.jsonl:1: expected a JSON object per line, got list"):
        read_records(str(tmp_path / "list.jsonl"))


def test_json_of_the_wrong_shape(tmp_path):
    (tmp_path / "d.json").write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(UserError, match=r"expected a JSON list of objects"):
        read_records(str(tmp_path / "d.json"))
    (tmp_path / "broken.json").write_text('[\n{"a": 1},\n{"a": }\n]', encoding="utf-8")
    with pytest.raises(UserError, match=r"broken\.json:3: malformed JSON"):
        read_records(str(tmp_path / "broken.json"))


def test_empty_data_set(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("  \n\n \n", encoding="utf-8")
    with pytest.raises(UserError, match=r"has no records"):
        read_records(str(tmp_path / "empty.jsonl"))
    with pytest.raises(UserError, match=r"has no records"):
        read_records([str(tmp_path / "blank.txt")])
    with pytest.raises(UserError, match=r"empty list"):
        read_records([])


def test_real_tinystories_and_alpaca():
    stories_path = require_shared_data("tinystories", "tinystories_val_head.txt")
    alpaca_path = require_shared_data("alpaca", "alpaca_5000_subset_pr152.json")
    # independent grouping: runs of non-blank lines
    blocks, current = [], []
    for line in stories_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current).strip())
            current = []
    if current:
        blocks.append("\n".join(current).strip())
    stories = read_records(str(stories_path))
    assert [r["text"] for r in stories] == blocks
    assert len(stories) > 800

    alpaca = read_records(str(alpaca_path))
    assert alpaca == json.loads(alpaca_path.read_text(encoding="utf-8"))
    assert len(alpaca) == 5000 and set(alpaca[0]) == {"instruction", "input", "output"}
