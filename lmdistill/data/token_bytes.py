"""What UTF-8 bytes each token id stands for, and where each token of a sequence lies in the text's bytes.

Offsets reported by tokenizers are character offsets and split characters ambiguously (a byte-level BPE token that
holds half of an emoji gets the emoji's whole character span), so alignment works from the vocabulary instead:

- byte-level BPE (GPT-2, Qwen2 ...): each character of a token string stands for one byte (GPT-2's
  ``bytes_to_unicode`` table), so a token is exactly its bytes, parts of multibyte characters included;
- SentencePiece (Llama, Gemma ...): ``▁`` is a space, ``<0xNN>`` byte-fallback tokens are the byte NN, anything
  else is its UTF-8 string; the dummy prefix space SentencePiece puts before the first word is not in the text;
- special tokens (BOS, EOS, padding, chat-template markers) stand for no bytes at all.

:func:`byte_spans` then walks a tokenisation over the text's bytes and gives each token its ``(start, end)`` byte
span, or marks it unaligned from the first token whose bytes do not follow (e.g. a normaliser changed the text).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

SENTENCEPIECE_SPACE = "\u2581"


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character -> the byte it stands for (the inverse of ``bytes_to_unicode``)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + shift)
            shift += 1
    return {chr(code): byte for byte, code in zip(printable, codes)}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and type(decoder).__name__ == "ByteLevel"


def _sentencepiece_bytes(piece: str) -> bytes:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])  # byte fallback
        except ValueError:
            pass
    return piece.replace(SENTENCEPIECE_SPACE, " ").encode("utf-8")


def _byte_level_bytes(piece: str) -> bytes | None:
    table = _byte_decoder()
    if all(char in table for char in piece):
        return bytes(table[char] for char in piece)
    return None  # an added token written as plain text (not through the byte table)


@dataclass(frozen=True)
class TokenBytes:
    """The bytes of every token id of one tokenizer (b"" for special tokens), built once per tokenizer."""

    table: tuple[bytes, ...]
    special: frozenset[int]
    eos_id: int | None
    sentencepiece: bool
    special_text: dict[int, bytes]  # what a special token's string is, where text spells it literally  # tokens carry ``▁`` word markers and the text may get a dummy prefix space

    @classmethod
    def of(cls, tokenizer) -> "TokenBytes":
        size = len(tokenizer)
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
            if getattr(added, "special", False):
                special.add(int(token_id))
        byte_level = _is_byte_level(tokenizer)
        table = []
        for token_id, piece in enumerate(pieces):
            if token_id in special or piece is None:
                table.append(b"")
            elif byte_level:
                decoded = _byte_level_bytes(piece)
                table.append(decoded if decoded is not None else piece.encode("utf-8"))
            else:
                table.append(_sentencepiece_bytes(piece))
        special_text = {i: pieces[i].encode("utf-8") for i in special if i < size and pieces[i]}
        return cls(tuple(table), frozenset(special), tokenizer.eos_token_id, sentencepiece=not byte_level,
                   special_text=special_text)

    def text_of(self, token_ids: list[int]) -> str:
        """The text the (non-special) tokens spell; an incomplete character at the end (truncation) is dropped."""
        return b"".join(self.table[i] for i in token_ids if 0 <= i < len(self.table)).decode("utf-8", errors="ignore")


def byte_spans(token_bytes: TokenBytes, token_ids: list[int], text: bytes) -> list[tuple[int, int] | None]:
    """Each token's (start, end) in ``text`` (UTF-8 bytes); special tokens get an empty span where they stand.

    A SentencePiece dummy prefix (the leading space of the first word piece when ``text`` does not start with one)
    is not counted; a special token whose string the text spells literally covers those bytes. From the first token whose bytes do not continue the text, every token is None (unaligned).
    """
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for index, token_id in enumerate(token_ids):
        piece = token_bytes.table[token_id] if 0 <= token_id < len(token_bytes.table) else None
        if piece is None:
            return spans + [None] * (len(token_ids) - index)
        literal = token_bytes.special_text.get(token_id) if not piece else None
        if literal and text.startswith(literal, cursor):
            # the text spells a special token's string (e.g. "<s>") and the tokenizer took it for the special token
            spans.append((cursor, cursor + len(literal)))
            cursor += len(literal)
        elif text.startswith(piece, cursor):
            spans.append((cursor, cursor + len(piece)))
            cursor += len(piece)
        elif token_bytes.sentencepiece and cursor == 0 and piece.startswith(b" ") and text.startswith(piece[1:], 0):
            spans.append((0, len(piece) - 1))  # the dummy prefix: SentencePiece's space before the first word
            cursor = len(piece) - 1
        else:
            return spans + [None] * (len(token_ids) - index)
    return spans


def exact_token_map(student: TokenBytes, teacher: TokenBytes) -> tuple[torch.Tensor, torch.Tensor]:
    """(student ids, teacher ids) of the tokens whose bytes are equal in both vocabularies, one-to-one.

    Special tokens are left out, except that the two EOS tokens are mapped onto each other (both end a text).
    Where one vocabulary holds the same bytes twice (e.g. ``▁a`` and a byte-level `` a``), its first id is used.
    """
    first_teacher: dict[bytes, int] = {}
    for token_id, piece in enumerate(teacher.table):
        if piece and piece not in first_teacher:
            first_teacher[piece] = token_id
    pairs, seen = [], set()
    for token_id, piece in enumerate(student.table):
        if piece and piece not in seen and piece in first_teacher:
            seen.add(piece)
            pairs.append((token_id, first_teacher[piece]))
    if student.eos_id is not None and teacher.eos_id is not None:
        pairs.append((student.eos_id, teacher.eos_id))
    student_ids = torch.tensor([s for s, _ in pairs], dtype=torch.long)
    teacher_ids = torch.tensor([t for _, t in pairs], dtype=torch.long)
    return student_ids, teacher_ids
