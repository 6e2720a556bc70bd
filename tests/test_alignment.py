"""Cross-tokenizer alignment: properties over many strings with the real GPT-2, Llama SentencePiece and Qwen2
tokenizers (byte-level BPE vs ``▁`` word markers with byte fallback and BOS)."""

from __future__ import annotations

import random

import pytest

from lmdistill.data.alignment import align_spans, aligned_batch, teacher_view
from lmdistill.data.token_bytes import TokenBytes, byte_spans, exact_token_map
from tests.conftest import require_shared_data

PIECES = ["hello", "world", " ", "  ", "\n", "\n\n", "\t", "é", "ü", "ß", "日本語", "中文", "한국어", "😀", "👩‍👩‍👧", "🇫🇷",
          "e\u0301", "123", "4.5", "<0x41>", "<s>", "don't", "—", "…", "x", "A", "Ωμέγα", "שלום", "ok.", "#", "\u00a0"]


def random_strings(count: int, seed: int) -> list[str]:
    """Seeded random mixtures of ASCII words, runs of spaces (leading too), newlines, CJK, emoji (ZWJ sequences,
    flags), combining accents, right-to-left scripts and byte-fallback look-alikes; the empty string first."""
    rng = random.Random(seed)
    strings = ["", " ", "a", " leading space", "trailing space ", "😀", "日本"]
    while len(strings) < count:
        pieces = [rng.choice(PIECES) for _ in range(rng.randint(1, 12))]
        if rng.random() < 0.3:
            pieces.insert(0, " " * rng.randint(1, 3))
        if rng.random() < 0.3:  # random code points, astral ones included
            pieces.append("".join(chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FFF), rng.randint(0x4E00, 0x9FFF),
                                                  rng.randint(0x1F300, 0x1FAFF)])) for _ in range(rng.randint(1, 6))))
        strings.append("".join(pieces))
    return strings


STRINGS = random_strings(250, seed=18)


@pytest.fixture(scope="module")
def qwen2_tokenizer():
    from transformers import AutoTokenizer

    folder = require_shared_data("tokenizers", "ggml-vocab-qwen2.gguf").parent
    return AutoTokenizer.from_pretrained(str(folder), gguf_file="ggml-vocab-qwen2.gguf")


@pytest.fixture(scope="module")
def tokenizers(gpt2_tokenizer, spm_tokenizer):
    return {"gpt2": gpt2_tokenizer, "spm": spm_tokenizer}


@pytest.fixture(scope="module")
def tables(tokenizers):
    return {name: TokenBytes.of(tokenizer) for name, tokenizer in tokenizers.items()}


def test_token_bytes_by_hand(tables, tokenizers):
    gpt2, spm = tables["gpt2"], tables["spm"]
    assert gpt2.table[tokenizers["gpt2"].convert_tokens_to_ids("Ġh")] == b" h"
    # GPT-2 splits the emoji's four bytes over two tokens: 'ĠðŁĺ' = b' \xf0\x9f\x98' and 'Ģ' = b'\x80'
    assert gpt2.table[tokenizers["gpt2"].convert_tokens_to_ids("ĠðŁĺ")] == b" \xf0\x9f\x98"
    assert gpt2.table[tokenizers["gpt2"].convert_tokens_to_ids("Ģ")] == b"\x80"
    assert spm.table[tokenizers["spm"].convert_tokens_to_ids("<0xF0>")] == b"\xf0"  # byte fallback
    assert spm.table[tokenizers["spm"].convert_tokens_to_ids("▁x")] == b" x"  # the word marker is a space
    assert spm.table[tokenizers["spm"].bos_token_id] == b"" and gpt2.table[tokenizers["gpt2"].eos_token_id] == b""


@pytest.mark.parametrize("name", ["gpt2", "spm"])
def test_byte_spans_tile_the_text(tables, tokenizers, name):
    """Every token gets a span; tokens tile the UTF-8 bytes in order; special tokens (BOS) are empty."""
    for text in STRINGS:
        if "\u2581" in text:
            continue
        encoded = text.encode("utf-8")
        ids = tokenizers[name](text, add_special_tokens=True)["input_ids"]
        spans = byte_spans(tables[name], ids, encoded)
        assert None not in spans, (text, ids)
        cursor = 0
        for token_id, (start, end) in zip(ids, spans):
            assert start == cursor
            cursor = end
            if token_id in tables[name].special:  # empty, unless the text spells the special token's string ("<s>")
                assert start == end or encoded[start:end] == tables[name].special_text[token_id]
        assert cursor == len(encoded), text
        assert b"".join(encoded[s:e] for s, e in spans) == encoded


def test_sentencepiece_dummy_prefix_and_literal_marker(tables, tokenizers):
    spm = tokenizers["spm"]
    ids = spm("Hello", add_special_tokens=True)["input_ids"]  # [<s>, ▁Hello]: the ▁ is not in the text
    assert byte_spans(tables["spm"], ids, b"Hello") == [(0, 0), (0, 5)]
    # A literal ▁ in the text reads back as a space: from there the tokens are unaligned, never misplaced.
    ids = spm("ab \u2581cd", add_special_tokens=True)["input_ids"]
    spans = byte_spans(tables["spm"], ids, "ab \u2581cd".encode())
    assert spans[:2] == [(0, 0), (0, 2)] and spans[-1] is None


def _check_alignment(view, student_ids, student, teacher) -> None:
    """Independent of the spans code: pieces are joined straight from the vocabulary tables."""
    encoded = student.text_of(student_ids).encode("utf-8")
    student_text = [student.table[i] for i in student_ids]
    teacher_text = [teacher.table[i] for i in view.teacher_ids]

    def same(student_piece: bytes, teacher_piece: bytes, at_start: bool) -> bool:
        # a SentencePiece teacher may put its dummy prefix space before the first word (not in the text)
        return student_piece == teacher_piece or (at_start and teacher_piece == b" " + student_piece)

    for student_position, teacher_position in view.alignment.positions:
        # the same text before both predicted tokens
        assert same(b"".join(student_text[:student_position + 1]), b"".join(teacher_text[:teacher_position + 1]), True)
    previous_end, previous_teacher_end, covered = None, None, b""
    for student_range, teacher_range in view.alignment.spans:
        student_piece = b"".join(student_text[p + 1] for p in student_range)
        teacher_piece = b"".join(teacher_text[p + 1] for p in teacher_range)
        assert same(student_piece, teacher_piece, b"".join(teacher_text[:teacher_range[0] + 1]).strip() == b"")
        if previous_end is not None and student_range[0] != previous_end:
            # spans follow each other without gaps, except where a special token (spelling nothing) stands between
            skipped = student_text[previous_end + 1:student_range[0] + 1] + teacher_text[previous_teacher_end + 1:teacher_range[0] + 1]
            assert b"" in skipped
        previous_end, previous_teacher_end = student_range[-1] + 1, teacher_range[-1] + 1
        covered += student_piece
    if b"" not in student_text[1:-1]:  # no special token inside the text: the spans tile its end
        assert encoded.endswith(covered)


@pytest.mark.parametrize("direction", [("gpt2", "spm"), ("spm", "gpt2")])
def test_alignment_properties(tables, tokenizers, direction):
    student_name, teacher_name = direction
    student, teacher = tables[student_name], tables[teacher_name]
    aligned = total = 0
    for text in STRINGS:
        if "\u2581" in text:
            continue
        student_ids = tokenizers[student_name](text, add_special_tokens=True)["input_ids"] + [tokenizers[student_name].eos_token_id]
        view = teacher_view(student_ids, student, tokenizers[teacher_name], teacher)
        assert view.teacher_ids[-1] == tokenizers[teacher_name].eos_token_id
        _check_alignment(view, student_ids, student, teacher)
        aligned += len(view.alignment.positions)
        total += len(student_ids) - 1
    assert aligned / total > 0.5  # most next-token positions find a partner across these two vocabularies


def test_identical_tokenizers_align_every_position(tables, tokenizers):
    table = tables["gpt2"]
    for text in STRINGS[1:60]:
        ids = tokenizers["gpt2"](text)["input_ids"] + [table.eos_id]
        view = teacher_view(ids, table, tokenizers["gpt2"], table)
        assert view.teacher_ids == ids
        assert view.alignment.positions == [(p, p) for p in range(len(ids) - 1)]
        assert view.alignment.spans == [(range(p, p + 1), range(p, p + 1)) for p in range(len(ids) - 1)]


def test_align_spans_by_hand():
    # text "abcd": student a|bc|d, teacher <bos>|ab|c|d : common starts 0, 3 (+ end 4)
    student = [(0, 1), (1, 3), (3, 4)]
    teacher = [(0, 0), (0, 2), (2, 3), (3, 4)]
    alignment = align_spans(student, teacher, text_length=4)
    assert alignment.positions == [(1, 2)]  # student pos 1 predicts 'd' (token 2); teacher pos 2 predicts 'd' (token 3)
    # span [0, 3) needs a predecessor of student token 0: none (no BOS) -> dropped; span [3, 4) kept
    assert alignment.spans == [(range(1, 2), range(2, 3))]
    # A special token inside a span breaks it (nothing predicts it on the other side).
    alignment = align_spans([(0, 0), (0, 1), (1, 1), (1, 2)], [(0, 0), (0, 2)], text_length=2)
    assert alignment.spans == []


def test_empty_and_truncated_examples(tables, tokenizers):
    student, teacher = tables["gpt2"], tables["spm"]
    eos = student.eos_id
    view = teacher_view([eos], student, tokenizers["spm"], teacher)  # an empty completion: just EOS
    assert view.alignment.positions == [] and view.text_bytes == 0
    view = teacher_view([], student, tokenizers["spm"], teacher)
    assert view.teacher_ids == [tokenizers["spm"].bos_token_id]
    ids = tokenizers["gpt2"]("hi 😀")["input_ids"]  # 'hi', ' 😀' split into two byte tokens
    view = teacher_view(ids[:-1], student, tokenizers["spm"], teacher)  # cut inside the emoji
    assert view.text_bytes == len("hi ".encode()) or view.text_bytes == len(b"hi")
    _check_alignment(view, ids[:-1], student, teacher)


def test_chat_template_markers_spell_nothing(qwen2_tokenizer, tables, tokenizers):
    qwen = TokenBytes.of(qwen2_tokenizer)
    messages = [{"role": "user", "content": "Hi 日本"}, {"role": "assistant", "content": "Hello 😀"}]
    ids = qwen2_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    text = qwen.text_of(ids)
    assert "<|im_start|>" not in text and "Hello 😀" in text and "user\nHi 日本" in text
    view = teacher_view(ids, qwen, tokenizers["spm"], tables["spm"])
    _check_alignment(view, ids, qwen, tables["spm"])
    assert view.alignment.positions


def test_exact_token_map(tables, tokenizers):
    student_ids, teacher_ids = exact_token_map(tables["gpt2"], tables["spm"])
    assert len(set(student_ids.tolist())) == len(student_ids) and len(set(teacher_ids.tolist())) == len(teacher_ids)
    pairs = dict(zip(student_ids.tolist(), teacher_ids.tolist()))
    assert pairs[tokenizers["gpt2"].convert_tokens_to_ids("Ġthe")] == tokenizers["spm"].convert_tokens_to_ids("▁the")
    assert pairs[tokenizers["gpt2"].eos_token_id] == tokenizers["spm"].eos_token_id
    for s, t in list(pairs.items())[:2000]:
        assert tables["gpt2"].table[s] == tables["spm"].table[t] or s == tokenizers["gpt2"].eos_token_id


def test_aligned_batch_flattens_rows(tables, tokenizers):
    student, teacher = tables["gpt2"], tables["spm"]
    rows = [tokenizers["gpt2"]("Hello world")["input_ids"] + [student.eos_id], tokenizers["gpt2"]("ok")["input_ids"]]
    views = [teacher_view(ids, student, tokenizers["spm"], teacher) for ids in rows]
    batch = aligned_batch(views, teacher_pad_id=0)
    assert batch.teacher_input_ids.shape == (2, max(len(v.teacher_ids) for v in views))
    assert batch.teacher_attention_mask.sum().item() == sum(len(v.teacher_ids) for v in views)
    assert batch.position_rows.tolist() == [0] * len(views[0].alignment.positions) + [1] * len(views[1].alignment.positions)
    assert batch.span_rows.numel() == sum(len(v.alignment.spans) for v in views)
