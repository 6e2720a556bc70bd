"""The article's attention-distillation API, implemented correctly on top of lmdistill's losses.

``AttentionDistillationLoss`` compares student and teacher attention maps with ``attention_kl``;
``KnowledgeDistillationModel`` wraps a student and a frozen teacher and returns ``(student_output, attention_loss)``.
See docs/article.md for where this differs from the article's code and why.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from lmdistill.errors import UserError
from lmdistill.losses import reduce
from lmdistill.losses.attention import AttentionCapture, attention_kl, scores_from_probabilities
from lmdistill.losses.layer_map import uniform_layer_map
from lmdistill.models import capture as attention_capture

Attention = torch.Tensor | AttentionCapture


class AttentionDistillationLoss(torch.nn.Module):
    """Attention-map KL, KL(A_t ‖ A_s) with A = softmax(scores / T) over keys, mean over heads and valid queries.

    forward(student_attn, teacher_attn, attention_mask=None) -> scalar. Each attention is either probabilities
    (B, h, Q, K) as Hugging Face returns them with ``output_attentions=True``, or an :class:`AttentionCapture` of raw
    scores (``lmdistill.models.capture``); a list/tuple of layers gives the mean over layer pairs.
    Probabilities become scores once, log A (softmax(log A / T) = softmax(scores / T)); padded keys get probability
    0 and padded queries are left out of the mean. ``attention_mask`` (B, S): 1 = real token.
    """

    def __init__(self, temperature: float = 3.0):
        super().__init__()
        if not float(temperature) > 0.0:
            raise UserError(f"temperature={temperature} must be > 0; use 1.0 for the plain attention distributions")
        self.temperature = float(temperature)

    def forward(
        self, student_attn: Attention | Sequence[Attention], teacher_attn: Attention | Sequence[Attention],
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if _is_layers(student_attn) or _is_layers(teacher_attn):
            if not (_is_layers(student_attn) and _is_layers(teacher_attn) and len(student_attn) == len(teacher_attn)):
                raise UserError("pass one student and one teacher attention per mapped layer pair (two lists of equal length)")
            return torch.stack([self(s, t, attention_mask) for s, t in zip(student_attn, teacher_attn)]).mean()
        student, teacher = _as_capture(student_attn, "student"), _as_capture(teacher_attn, "teacher")
        if student.scores.shape[1] != teacher.scores.shape[1]:
            raise UserError(
                f"attention distillation needs equal head counts, but the student has {student.scores.shape[1]} and the "
                f"teacher {teacher.scores.shape[1]}; give the student as many heads or use lmdistill's 'minilm_v2' loss"
            )
        key_mask = None if attention_mask is None else attention_mask.to(torch.bool)
        per_query = attention_kl(student, teacher, key_mask=key_mask, temperature=self.temperature)  # (B, Q)
        return reduce(per_query, key_mask)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


def _is_layers(attention: Any) -> bool:
    # AttentionCapture is itself a (named) tuple: one layer, not a list of layers.
    return isinstance(attention, (list, tuple)) and not isinstance(attention, AttentionCapture)


def _as_capture(attention: Attention, side: str) -> AttentionCapture:
    if isinstance(attention, AttentionCapture):
        return attention
    if not isinstance(attention, torch.Tensor):
        raise UserError(f"the {side} attention is {type(attention).__name__}; pass a (B, heads, Q, K) tensor of probabilities or an AttentionCapture")
    if bool((attention < 0).any()):
        raise UserError(
            f"the {side} attention has negative entries, so it is not probabilities; pass raw scores as "
            "AttentionCapture(scores=...) instead"
        )
    precision = torch.float64 if attention.dtype == torch.float64 else torch.float32
    return AttentionCapture(scores=scores_from_probabilities(attention.to(precision)))


class KnowledgeDistillationModel(torch.nn.Module):
    """A student with a frozen teacher: forward(**inputs) -> (student_output, attention_distillation_loss).

    Attention is captured as raw pre-softmax scores from both models (``lmdistill.models.capture``, which switches
    them to eager attention math). The loss is the mean over mapped layer pairs of :class:`AttentionDistillationLoss`;
    ``layer_map`` defaults to the uniform map (student layer i <-> teacher layer round((i+1)·L_t/L_s) − 1), which is
    the identity for equal depths. Head counts must match. The teacher stays in eval mode with no gradients.
    """

    def __init__(
        self, student_model: torch.nn.Module, teacher_model: torch.nn.Module, temperature: float = 3.0,
        layer_map: Sequence[tuple[int, int]] | None = None,
    ):
        super().__init__()
        student_config, teacher_config = student_model.config, teacher_model.config
        if student_config.num_attention_heads != teacher_config.num_attention_heads:
            raise UserError(
                f"the student has {student_config.num_attention_heads} attention heads and the teacher "
                f"{teacher_config.num_attention_heads}; attention-map distillation needs equal head counts, so build the "
                "student with the teacher's num_attention_heads"
            )
        student_layers, teacher_layers = student_config.num_hidden_layers, teacher_config.num_hidden_layers
        self.layer_map = [tuple(pair) for pair in layer_map] if layer_map is not None else uniform_layer_map(student_layers, teacher_layers)
        for s, t in self.layer_map:
            if not (0 <= s < student_layers and 0 <= t < teacher_layers):
                raise UserError(f"layer pair ({s}, {t}) out of range: the student has layers 0..{student_layers - 1}, the teacher 0..{teacher_layers - 1}")
        self.student = student_model
        self.teacher = teacher_model
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.attention_loss = AttentionDistillationLoss(temperature)
        attention_capture.enable_capture(self.student)
        attention_capture.enable_capture(self.teacher)

    def train(self, mode: bool = True) -> "KnowledgeDistillationModel":
        super().train(mode)
        self.teacher.eval()  # dropout off: the targets must not be noisy
        return self

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                **inputs: Any) -> tuple[Any, torch.Tensor]:
        """The article's call ``model(input_ids, attention_mask)`` (positional or keyword; other model inputs such as
        ``labels`` by keyword): the student's output and the attention-distillation loss."""
        if input_ids is not None:
            inputs["input_ids"] = input_ids
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
        teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        with torch.no_grad(), attention_capture.capture() as teacher_records:
            self.teacher(**teacher_inputs)
        with attention_capture.capture() as student_records:
            student_output = self.student(**inputs)
        _check_records(student_records, self.student.config.num_hidden_layers, "student")
        _check_records(teacher_records, self.teacher.config.num_hidden_layers, "teacher")
        loss = self.attention_loss(
            [student_records[s] for s, _ in self.layer_map], [teacher_records[t] for _, t in self.layer_map],
            inputs.get("attention_mask"),
        )
        return student_output, loss


def _check_records(records: list[AttentionCapture], layers: int, side: str) -> None:
    if len(records) != layers:
        raise UserError(
            f"captured {len(records)} attention maps from the {side} but it has {layers} layers; its attention does not go "
            "through transformers' AttentionInterface, so it cannot be captured"
        )
