"""Held-out language-model scores of a student (and, with a teacher, agreement and KL): the one implementation that
training-time evaluation, ``lmdistill eval`` and the benchmarks share."""

from __future__ import annotations

import math

import torch

from lmdistill.data.collate import collate_causal
from lmdistill.eval.lm_metrics import token_kl_sum, token_nll_sum, top1_match_count
from lmdistill.losses import IGNORE_INDEX


@torch.no_grad()
def causal_lm_scores(student, teacher, examples: list[dict], pad_id: int, batch_size: int, device) -> dict[str, float]:
    """Scores over the loss positions of causal-LM ``examples`` ({"input_ids", "labels"}, labels -100 outside the loss).

    Logits at t score label t + 1. Returns ``nll_per_token``, ``perplexity`` = exp(nll_per_token), ``num_tokens``
    and, with ``teacher``, ``top1_agreement`` and ``mean_token_kl`` = KL(p_t ‖ p_s) at temperature 1, over the
    vocabulary both models share (ids 0 .. min(V_s, V_t) − 1). Both models run in eval mode; modes are restored.
    """
    batches = ({k: v.to(device) for k, v in collate_causal(examples[start:start + batch_size], pad_id).items()}
               for start in range(0, len(examples), batch_size))

    def forward(model, batch):
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return model(**inputs).logits[:, :-1], batch["labels"][:, 1:]

    return held_out_scores(student, teacher, batches, forward)


def held_out_scores(student, teacher, batches, forward) -> dict[str, float]:
    """The scores of :func:`causal_lm_scores` for any task: ``forward(model, batch) -> (logits, targets)`` gives
    logits aligned with their targets (-100 outside the loss) for each batch of ``batches``."""
    models = [student] + ([teacher] if teacher is not None else [])
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    nll, count, matches, kl = 0.0, 0, 0, 0.0
    try:
        for batch in batches:
            student_logits, targets = forward(student, batch)
            batch_nll, batch_count = token_nll_sum(student_logits, targets)
            nll, count = nll + batch_nll, count + batch_count
            if teacher is not None:
                teacher_logits = forward(teacher, batch)[0].to(student_logits.device)
                size = min(student_logits.shape[-1], teacher_logits.shape[-1])
                mask = targets != IGNORE_INDEX
                batch_matches, _ = top1_match_count(student_logits[..., :size], teacher_logits[..., :size], mask)
                batch_kl, _ = token_kl_sum(student_logits[..., :size], teacher_logits[..., :size], mask)
                matches, kl = matches + batch_matches, kl + batch_kl
    finally:
        for model, mode in zip(models, modes):
            model.train(mode)
    scores = {"nll_per_token": nll / count if count else float("nan"),
              "perplexity": math.exp(nll / count) if count else float("nan"), "num_tokens": float(count)}
    if teacher is not None and count:
        scores.update({"top1_agreement": matches / count, "mean_token_kl": kl / count})
    return scores
