"""A live teacher with its own tokenizer: it reads the student's text re-tokenised, aligned through UTF-8 bytes.

For each micro-batch the student's tokens are turned back into their text, the teacher's tokenizer tokenises that
text, and :mod:`lmdistill.data.alignment` pairs the two tokenisations: next-token positions that follow the same
text (for ``uld`` and ``gold_hybrid``) and spans of identical text (for ``span_logprob_mse``). The teacher's head
runs only at the positions that are paired, so a large teacher vocabulary is never materialised for the whole
sequence. Values land on the student position they belong to and are reduced with the run's global loss-position
count: positions without a partner add 0, chat prompts stay out through the student's loss mask, and gradient
accumulation stays exact.

Because the student's samples are re-tokenised like any other batch, on-policy rollouts work unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch

from lmdistill.data.alignment import AlignedBatch, aligned_batch, alignment_coverage, teacher_view
from lmdistill.data.token_bytes import TokenBytes, exact_token_map
from lmdistill.errors import UserError
from lmdistill.losses import reduce, spec
from lmdistill.losses.cross_vocab import CROSS_VOCAB_LOSSES
from lmdistill.models.heads import output_head, run_without_head
from lmdistill.models.loading import load_tokenizer
from lmdistill.objective import Features, Masks, Needs

log = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def teacher_tokenizer(source: str):
    """The teacher's own tokenizer, loaded once per process (preflight and the signal both need it; a GGUF
    vocabulary takes seconds to parse). Read-only: nothing here changes it."""
    return load_tokenizer(source)


def _head_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The model's lm_head (with bias and Gemma-style final softcap) on selected hidden rows: (N, H) -> (N, V)."""
    weight, bias, softcap = output_head(model)
    logits = hidden.to(weight.dtype) @ weight.T
    if bias is not None:
        logits = logits + bias
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _token_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per row, in float32: (N, V), (N,) -> (N,)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)


@dataclass
class CrossTokenizerBatch:
    """The teacher's hidden states at its paired positions, with the alignment and the student's input ids."""

    aligned: AlignedBatch
    teacher: torch.nn.Module
    teacher_hidden: torch.Tensor  # (B, T, H) last hidden state of the teacher (no head applied)
    student_input_ids: torch.Tensor  # (B, S)
    token_map: tuple[torch.Tensor, torch.Tensor]
    features: Features = field(default_factory=Features)  # no hidden-state or attention terms across tokenizers

    def _placed(self, rows: torch.Tensor, positions: torch.Tensor, values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, S-1) tensor with ``values`` at (rows, positions), 0 elsewhere (differentiable in ``values``)."""
        placed = torch.zeros(like.shape[:2], dtype=values.dtype, device=values.device)
        return placed.index_put((rows, positions), values)

    def logit_term(self, name: str, params: dict[str, Any], student: Features, masks: Masks) -> torch.Tensor:
        aligned = self.aligned
        student_logits = student.logits[aligned.position_rows, aligned.student_positions]  # (N, V_s)
        teacher_logits = _head_logits(self.teacher, self.teacher_hidden[aligned.position_rows, aligned.teacher_positions])
        extra = {"token_map": self.token_map} if name == "gold_hybrid" else {}
        values = spec(name).fn(student_logits, teacher_logits, **params, **extra)  # (N,)
        per_position = self._placed(aligned.position_rows, aligned.student_positions, values, student.logits)
        return reduce(per_position, masks.loss, num_valid=masks.loss_count)

    def span_term(self, name: str, params: dict[str, Any], student: Features, masks: Masks) -> torch.Tensor:
        aligned = self.aligned
        spans = aligned.span_rows.numel()
        rows, positions = aligned.student_span_rows, aligned.student_span_positions
        student_lp = _token_log_probs(student.logits[rows, positions], self.student_input_ids[rows, positions + 1])
        teacher_rows, teacher_positions = aligned.teacher_span_rows, aligned.teacher_span_positions
        with torch.no_grad():
            teacher_lp = _token_log_probs(_head_logits(self.teacher, self.teacher_hidden[teacher_rows, teacher_positions]),
                                          aligned.teacher_input_ids[teacher_rows, teacher_positions + 1])
        student_span = torch.zeros(spans, dtype=student_lp.dtype, device=student_lp.device).index_add(0, aligned.student_span_index, student_lp)
        teacher_span = torch.zeros(spans, dtype=teacher_lp.dtype, device=teacher_lp.device).index_add(0, aligned.teacher_span_index, teacher_lp)
        # A span counts only when every student position in it is in the loss (no prompt text in a completion span).
        outside = (~masks.loss[rows, positions].bool()).float()
        complete = torch.zeros(spans, device=outside.device).index_add(0, aligned.student_span_index, outside) == 0
        values = spec(name).fn(student_span, teacher_span, **params) * complete
        per_position = self._placed(aligned.span_rows, aligned.span_last_positions, values, student.logits)
        return reduce(per_position, masks.loss, num_valid=masks.loss_count)


class CrossTokenizerTeacher:
    """One frozen causal-LM teacher with a tokenizer of its own (another vocabulary than the student's)."""

    model = None  # evaluation's agreement and KL compare one vocabulary; this teacher has another
    student_runs_headless = False

    def __init__(self, teacher: torch.nn.Module, teacher_tokenizer, student_tokenizer, train_examples: list[dict] | None = None):
        self.teacher = teacher
        self.teacher_tokenizer = teacher_tokenizer
        self.student_bytes = TokenBytes.of(student_tokenizer)
        self.teacher_bytes = TokenBytes.of(teacher_tokenizer)
        self.token_map = exact_token_map(self.student_bytes, self.teacher_bytes)  # built once per run
        pad = teacher_tokenizer.pad_token_id
        self.teacher_pad_id = pad if pad is not None else (teacher_tokenizer.eos_token_id or 0)
        if train_examples:
            coverage = alignment_coverage(train_examples[:200], self.student_bytes, teacher_tokenizer, self.teacher_bytes, self.token_map[0])
            log.info("cross-tokenizer teacher: %s", coverage.describe())

    def check_terms(self, terms) -> None:
        for term in terms:
            if term.kind in ("hidden", "attention"):
                raise UserError(f"objective term {term.name!r} compares {term.kind} states position by position; a teacher "
                                "with another tokenizer has other positions: use uld, gold_hybrid or span_logprob_mse")
            if term.kind == "tokens":
                raise UserError(f"objective term {term.name!r} reads the teacher's log-probability of each student "
                                "token; a teacher with another tokenizer has other tokens: use uld or gold_hybrid")
            if term.kind == "logits" and term.name not in CROSS_VOCAB_LOSSES:
                raise UserError(f"loss {term.name!r} compares distributions over one vocabulary; with a teacher of another "
                                f"tokenizer use one of {', '.join(sorted(CROSS_VOCAB_LOSSES))} (or span_logprob_mse)")

    def to(self, device) -> None:
        self.teacher.to(device)

    def batch(self, batch, example_indices, needs: Needs, task) -> CrossTokenizerBatch:
        device = batch["input_ids"].device
        lengths = batch["attention_mask"].sum(dim=1).tolist()  # right-padded rows (collation and rollouts)
        rows = [ids[:length] for ids, length in zip(batch["input_ids"].tolist(), lengths)]
        views = [teacher_view(ids, self.student_bytes, self.teacher_tokenizer, self.teacher_bytes) for ids in rows]
        aligned = aligned_batch(views, self.teacher_pad_id).to(device)
        with torch.no_grad():
            hidden = run_without_head(self.teacher, input_ids=aligned.teacher_input_ids,
                                      attention_mask=aligned.teacher_attention_mask).last_hidden_state
        return CrossTokenizerBatch(aligned, self.teacher, hidden, batch["input_ids"], self.token_map)
