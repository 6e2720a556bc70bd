"""Teacher signals: one interface (:class:`TeacherSignal`), one implementation per way of getting the teacher's view."""

from __future__ import annotations

import torch

from lmdistill.config import RunConfig
from lmdistill.teachers.base import TeacherSignal
from lmdistill.teachers.cached import CachedTeacher
from lmdistill.teachers.cross_tokenizer import CrossTokenizerTeacher, teacher_tokenizer
from lmdistill.teachers.fused import FusedTeacher
from lmdistill.teachers.live import LiveTeacher
from lmdistill.teachers.mixture import MixtureTeacher, mix_teachers


def teacher_signal(config: RunConfig, models: list[torch.nn.Module], *, headless: bool, tokenizer=None,
                   train_examples: list[dict] | None = None) -> TeacherSignal | None:
    """The signal ``config`` describes: None (label terms only), a cache, a mixture, one live model with its own
    tokenizer, or one live model (fused when ``headless``: a large vocabulary whose logits are never materialised)."""
    if not config.needs_teacher:
        return None
    if config.teachers[0].cache is not None:
        return CachedTeacher(config.teachers[0].cache, tokenizer, train_examples)
    if config.teachers[0].tokenizer is not None:
        return CrossTokenizerTeacher(models[0], teacher_tokenizer(config.teachers[0].tokenizer), tokenizer, train_examples)
    if len(models) > 1:
        return MixtureTeacher([(settings.weight, model) for settings, model in zip(config.teachers, models)], config.feature_teacher)
    return FusedTeacher(models[0]) if headless else LiveTeacher(models[0])


__all__ = ["CachedTeacher", "CrossTokenizerTeacher", "FusedTeacher", "LiveTeacher", "MixtureTeacher", "TeacherSignal", "mix_teachers", "teacher_signal"]
