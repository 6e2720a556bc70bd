"""Held-out evaluation during training: student perplexity and, with a teacher, agreement and KL per token."""

from __future__ import annotations

import math

import torch

from lmdistill.data.collate import collate_causal
from lmdistill.eval.lm_metrics import token_kl_sum, token_nll_sum, top1_match_count


@torch.no_grad()
def evaluate_student(student, teacher, examples: list[dict], pad_id: int, batch_size: int, device) -> dict[str, float]:
    """``eval/perplexity`` over the loss positions of ``examples``; ``eval/top1_agreement`` and ``eval/mean_token_kl``
    (KL(p_t || p_s), temperature 1) over the same positions when a teacher is given."""
    was_training = student.training
    student.eval()
    nll, count, matches, kl = 0.0, 0, 0, 0.0
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate_causal(examples[start:start + batch_size], pad_id).items()}
        targets = batch["labels"][:, 1:]
        student_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        batch_nll, batch_count = token_nll_sum(student_logits, targets)
        nll, count = nll + batch_nll, count + batch_count
        if teacher is not None:
            teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
            size = min(student_logits.shape[-1], teacher_logits.shape[-1])
            mask = targets != -100
            batch_matches, _ = top1_match_count(student_logits[..., :size], teacher_logits[..., :size], mask)
            batch_kl, _ = token_kl_sum(student_logits[..., :size], teacher_logits[..., :size], mask)
            matches, kl = matches + batch_matches, kl + batch_kl
    student.train(was_training)
    scores = {"eval/loss": nll / max(count, 1), "eval/perplexity": math.exp(nll / count) if count else float("nan")}
    if teacher is not None and count:
        scores.update({"eval/top1_agreement": matches / count, "eval/mean_token_kl": kl / count})
    return scores
