"""Align two tokenisations of one text through byte offsets (cross-tokenizer distillation).

The student's tokens spell a text (special tokens spell nothing); the teacher tokenises that same text with its own
tokenizer. Each token gets its byte span (:func:`lmdistill.data.token_bytes.byte_spans`), and two kinds of aligned
pairs follow, both in *logit positions* (position p predicts token p + 1, the causal shift):

- positions: a student token and a teacher token that start at the same byte. The logits before them were computed
  from the same text, so their next-token distributions compare (ULD, the hybrid loss);
- spans: the text between two consecutive common token boundaries: a run of student tokens and a run of teacher
  tokens spelling exactly the same bytes (a merge on one side meets the same text on the other). Their summed
  log-probabilities compare (the span loss).

A token needs a predecessor on its own side (BOS or earlier text) to be predicted, so the first text token of a side
without BOS is never aligned. Both sides' EOS, when the student's example ends with one, form one more pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmdistill.data.token_bytes import TokenBytes, byte_spans

Span = tuple[int, int] | None


@dataclass(frozen=True)
class Alignment:
    """One example's aligned pairs in logit positions (p predicts token p + 1)."""

    positions: list[tuple[int, int]]  # (student position, teacher position)
    spans: list[tuple[range, range]] = field(default_factory=list)  # (student positions, teacher positions)


def _starts_and_ends(spans: list[Span]) -> tuple[dict[int, int], dict[int, int]]:
    """byte -> index of the text token starting there, and byte -> index of the text token ending there."""
    starts, ends = {}, {}
    for index, span in enumerate(spans):
        if span is not None and span[1] > span[0]:
            starts[span[0]] = index
            ends[span[1]] = index
    return starts, ends


def _contiguous_text(spans: list[Span], first: int, last: int) -> bool:
    """True when tokens first..last are all text tokens (no special token inside a span)."""
    return all(spans[i] is not None and spans[i][1] > spans[i][0] for i in range(first, last + 1))


def align_spans(student: list[Span], teacher: list[Span], *, text_length: int,
                student_eos: int | None = None, teacher_eos: int | None = None) -> Alignment:
    """The aligned pairs of two byte-span lists over one text of ``text_length`` bytes.

    ``student_eos`` / ``teacher_eos``: the index of each side's EOS that ends the text, or None.
    """
    student_starts, student_ends = _starts_and_ends(student)
    teacher_starts, teacher_ends = _starts_and_ends(teacher)
    common = sorted(set(student_starts) & set(teacher_starts))
    positions = [(student_starts[b] - 1, teacher_starts[b] - 1) for b in common
                 if student_starts[b] >= 1 and teacher_starts[b] >= 1]
    boundaries = common + ([text_length] if text_length in student_ends and text_length in teacher_ends else [])
    spans = []
    for begin, end in zip(boundaries, boundaries[1:]):
        s_first, t_first = student_starts[begin], teacher_starts[begin]
        s_last, t_last = student_ends.get(end), teacher_ends.get(end)
        if s_first < 1 or t_first < 1 or s_last is None or t_last is None:
            continue
        if _contiguous_text(student, s_first, s_last) and _contiguous_text(teacher, t_first, t_last):
            spans.append((range(s_first - 1, s_last), range(t_first - 1, t_last)))
    both_end = text_length in student_ends and text_length in teacher_ends or text_length == 0
    if student_eos is not None and teacher_eos is not None and both_end and student_eos >= 1 and teacher_eos >= 1:
        positions.append((student_eos - 1, teacher_eos - 1))
        spans.append((range(student_eos - 1, student_eos), range(teacher_eos - 1, teacher_eos)))
    return Alignment(positions, spans)


@dataclass
class TeacherView:
    """The teacher's tokenisation of one student example and its alignment."""

    teacher_ids: list[int]
    alignment: Alignment
    text_bytes: int


def teacher_view(student_ids: list[int], student_bytes: TokenBytes, teacher_tokenizer, teacher_bytes: TokenBytes) -> TeacherView:
    """Tokenise the text of ``student_ids`` (padding removed) for the teacher and align the two tokenisations.

    The teacher adds its own special tokens (e.g. BOS) as its tokenizer does, but reads special-token strings in the
    text (a literal "<s>") as text; an EOS ending the student's example
    is answered by the teacher's EOS.
    """
    text = student_bytes.text_of(student_ids)
    encoded = text.encode("utf-8")
    teacher_ids = list(teacher_tokenizer(text, add_special_tokens=True, split_special_tokens=True)["input_ids"]) if text else []
    if not teacher_ids and getattr(teacher_tokenizer, "bos_token_id", None) is not None:
        teacher_ids = [teacher_tokenizer.bos_token_id]
    student_eos = teacher_eos = None
    if student_ids and student_bytes.eos_id is not None and student_ids[-1] == student_bytes.eos_id and teacher_bytes.eos_id is not None:
        student_eos = len(student_ids) - 1
        teacher_ids.append(teacher_bytes.eos_id)
        teacher_eos = len(teacher_ids) - 1
    alignment = align_spans(byte_spans(student_bytes, student_ids, encoded), byte_spans(teacher_bytes, teacher_ids, encoded),
                            text_length=len(encoded), student_eos=student_eos, teacher_eos=teacher_eos)
    return TeacherView(teacher_ids, alignment, len(encoded))


@dataclass
class AlignedBatch:
    """A micro-batch's teacher inputs and aligned pairs as flat index tensors (all on one device).

    positions: ``position_rows``, ``student_positions``, ``teacher_positions`` (N,).
    spans: each side's token positions (row, position) with the span they belong to (M_s,) / (M_t,), and each span's
    row and last student position, where its value is placed (K,).
    """

    teacher_input_ids: torch.Tensor  # (B, T)
    teacher_attention_mask: torch.Tensor  # (B, T)
    position_rows: torch.Tensor
    student_positions: torch.Tensor
    teacher_positions: torch.Tensor
    student_span_rows: torch.Tensor
    student_span_positions: torch.Tensor
    student_span_index: torch.Tensor
    teacher_span_rows: torch.Tensor
    teacher_span_positions: torch.Tensor
    teacher_span_index: torch.Tensor
    span_rows: torch.Tensor
    span_last_positions: torch.Tensor

    def to(self, device) -> "AlignedBatch":
        return AlignedBatch(**{name: value.to(device) for name, value in vars(self).items()})


def aligned_batch(views: list[TeacherView], teacher_pad_id: int) -> AlignedBatch:
    """Pad the teacher sequences (right) and flatten every row's aligned pairs into index tensors."""
    width = max([len(view.teacher_ids) for view in views] + [1])
    input_ids = torch.full((len(views), width), teacher_pad_id, dtype=torch.long)
    attention = torch.zeros((len(views), width), dtype=torch.long)
    columns: dict[str, list[int]] = {name: [] for name in (
        "position_rows", "student_positions", "teacher_positions", "student_span_rows", "student_span_positions",
        "student_span_index", "teacher_span_rows", "teacher_span_positions", "teacher_span_index", "span_rows",
        "span_last_positions")}
    for row, view in enumerate(views):
        input_ids[row, :len(view.teacher_ids)] = torch.tensor(view.teacher_ids, dtype=torch.long)
        attention[row, :len(view.teacher_ids)] = 1
        for student_position, teacher_position in view.alignment.positions:
            columns["position_rows"].append(row)
            columns["student_positions"].append(student_position)
            columns["teacher_positions"].append(teacher_position)
        for student_range, teacher_range in view.alignment.spans:
            index = len(columns["span_rows"])
            columns["span_rows"].append(row)
            columns["span_last_positions"].append(student_range[-1])
            for side, positions in (("student", student_range), ("teacher", teacher_range)):
                columns[f"{side}_span_rows"].extend([row] * len(positions))
                columns[f"{side}_span_positions"].extend(positions)
                columns[f"{side}_span_index"].extend([index] * len(positions))
    tensors = {name: torch.tensor(values, dtype=torch.long) for name, values in columns.items()}
    return AlignedBatch(input_ids, attention, **tensors)


@dataclass(frozen=True)
class Coverage:
    """How much of the student's loss a teacher with another tokenizer reaches (preflight, logs)."""

    loss_positions: int  # student positions in the loss
    aligned_positions: int  # ... of which have a teacher position after the same text
    loss_tokens: int  # student target tokens in the loss
    mapped_tokens: int  # ... whose string is also one token of the teacher's vocabulary

    @property
    def aligned_share(self) -> float:
        return self.aligned_positions / self.loss_positions if self.loss_positions else 0.0

    @property
    def mapped_share(self) -> float:
        return self.mapped_tokens / self.loss_tokens if self.loss_tokens else 0.0

    def describe(self) -> str:
        return (f"{self.aligned_share:.1%} of {self.loss_positions} loss positions aligned with a teacher position, "
                f"{self.mapped_share:.1%} of loss tokens exactly mapped to a teacher token")


def alignment_coverage(examples: list[dict], student_bytes: TokenBytes, teacher_tokenizer, teacher_bytes: TokenBytes,
                       mapped_student_ids: torch.Tensor) -> Coverage:
    """:class:`Coverage` over causal ``examples`` (input_ids, labels with -100 outside the loss)."""
    mapped = set(mapped_student_ids.tolist())
    loss_positions = aligned = mapped_tokens = 0
    for example in examples:
        ids, labels = example["input_ids"], example["labels"]
        in_loss = {p for p in range(len(ids) - 1) if labels[p + 1] != -100}
        view = teacher_view(ids, student_bytes, teacher_tokenizer, teacher_bytes)
        loss_positions += len(in_loss)
        aligned += sum(1 for student_position, _ in view.alignment.positions if student_position in in_loss)
        mapped_tokens += sum(1 for p in in_loss if ids[p + 1] in mapped)
    return Coverage(loss_positions, aligned, loss_positions, mapped_tokens)
