"""Atomic writes: the whole new file or the old one, with the permissions a plain write would give."""

from __future__ import annotations

import os
import stat

import pytest

from lmdistill.files import write_atomically


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomically_written_files_get_the_mode_a_plain_write_gets(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_atomically(tmp_path / "evaluation.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "evaluation.json") == _mode(tmp_path / "plain.json") == 0o666 & ~umask
    assert (tmp_path / "evaluation.json").read_text() == "{}"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    write_atomically(target, "old: 1\n")
    with pytest.raises(TypeError):
        write_atomically(target, 42)  # not text: fails while writing
    assert target.read_text() == "old: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
