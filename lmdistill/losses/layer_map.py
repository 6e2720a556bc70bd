"""Which teacher layer each student layer learns from: pure helpers returning (student, teacher) index pairs."""

from __future__ import annotations

from lmdistill.errors import UserError


def _check_depths(num_student_layers: int, num_teacher_layers: int) -> None:
    if num_student_layers < 1 or num_teacher_layers < 1:
        raise UserError(
            f"layer counts must be positive (student {num_student_layers}, teacher {num_teacher_layers}); "
            "check the model configs"
        )
    if num_student_layers > num_teacher_layers:
        raise UserError(
            f"student has {num_student_layers} layers, more than the teacher's {num_teacher_layers}; "
            "give an explicit layer map instead of the uniform one"
        )


def uniform_layer_map(num_student_layers: int, num_teacher_layers: int) -> list[tuple[int, int]]:
    """TinyBERT's uniform map, 0-based: student layer i ↔ teacher layer round((i + 1)·L_t / L_s) − 1.

    round() is half-up, floor(x + 0.5), not Python's banker's rounding; it is computed in integers,
    (2·(i + 1)·L_t + L_s) // (2·L_s), so no float error can move a layer. The last student layer always maps to
    the last teacher layer. Embeddings (index -1 in callers' terms) are not included.
    """
    _check_depths(num_student_layers, num_teacher_layers)
    return [
        (i, (2 * (i + 1) * num_teacher_layers + num_student_layers) // (2 * num_student_layers) - 1)
        for i in range(num_student_layers)
    ]


def last_layer_map(num_student_layers: int, num_teacher_layers: int) -> list[tuple[int, int]]:
    """Only the last layers: [(L_s − 1, L_t − 1)] (DistilBERT's cosine loss, MiniLM's attention transfer)."""
    _check_depths(num_student_layers, num_teacher_layers)
    return [(num_student_layers - 1, num_teacher_layers - 1)]
