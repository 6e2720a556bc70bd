"""What on-policy distillation optimises, measured on the student's own samples from held-out prompts.

(a) ``teacher_nll_of_samples``: the teacher's mean negative log-likelihood per sampled token (the reverse-KL view:
how plausible the teacher finds what the student says; E_y~p_s[−log p_t(y)] = KL(p_s ‖ p_t) + H(p_s)).
(b) repetition: ``distinct_2`` (unique bigrams / all bigrams over every sample, Li et al. 2016) and ``loop_rate``
(the share of samples that loop, :func:`loops`).
"""

from __future__ import annotations

from collections.abc import Sequence

from lmdistill.config import SamplingConfig
from lmdistill.data.sampling import row_seed, sample_continuations
from lmdistill.eval.held_out import causal_lm_scores
from lmdistill.losses import IGNORE_INDEX

# A sample loops when a block of p tokens repeats back to back at least LOOP_COPIES times over at least
# LOOP_MIN_TOKENS tokens ("and then and then and then", "!!!!!!!!"); two copies of a phrase are ordinary text.
LOOP_COPIES = 3
LOOP_MIN_TOKENS = 8


def distinct_n(sequences: Sequence[Sequence[int]], n: int = 2) -> float:
    """Unique n-grams over all n-grams of all sequences (corpus-level distinct-n); 0 when there is no n-gram."""
    grams = [tuple(seq[i:i + n]) for seq in sequences for i in range(len(seq) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def loops(tokens: Sequence[int], *, copies: int = LOOP_COPIES, min_tokens: int = LOOP_MIN_TOKENS) -> bool:
    """Whether some block of p ≥ 1 tokens occurs ``copies`` times in a row, the run covering ≥ ``min_tokens`` tokens.

    For each period p a run counts consecutive positions i with tokens[i] == tokens[i − p]; a run of r such
    positions is a span of r + p tokens with period p, i.e. (r + p) / p copies.
    """
    tokens = list(tokens)
    for period in range(1, len(tokens) // copies + 1):
        run = 0
        for i in range(period, len(tokens)):
            run = run + 1 if tokens[i] == tokens[i - period] else 0
            if run + period >= max(copies * period, min_tokens):
                return True
    return False


def prompt_length(example: dict[str, list[int]]) -> int:
    """The prompt of a held-out causal example: its tokens before the first scored one (for plain text, whose loss
    starts at 0, the first half, at most 16 tokens)."""
    ids, labels = example["input_ids"], example["labels"]
    first = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(ids))
    return first if first > 0 else min(16, len(ids) // 2)


def teacher_nll_of_samples(teacher, prompts: Sequence[list[int]], samples: Sequence[list[int]], *, pad_id: int,
                           batch_size: int, device) -> tuple[float, int]:
    """(mean NLL per sampled token under ``teacher``, number of sampled tokens): each sample scored after its prompt."""
    examples = [{"input_ids": list(prompt) + list(sample), "labels": [IGNORE_INDEX] * len(prompt) + list(sample)}
                for prompt, sample in zip(prompts, samples) if sample]
    if not examples:
        return float("nan"), 0
    scores = causal_lm_scores(teacher, None, examples, pad_id, batch_size, device)
    return scores["nll_per_token"], int(scores["num_tokens"])


def sample_quality(model, teacher, prompts: Sequence[list[int]], *, sampling: SamplingConfig, seed: int, pad_id: int,
                   eos_token_id, batch_size: int, device) -> dict[str, float]:
    """Sample ``model`` once per prompt (row i seeded by ``row_seed(seed, i)``, so every evaluation of a run draws
    with the same seeds) and score the samples: ``teacher_nll_of_samples``, ``distinct_2``, ``loop_rate`` and
    ``sample_tokens`` (mean sampled tokens per prompt)."""
    samples: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        seeds = [row_seed(seed, start + i) for i in range(len(chunk))]
        samples.extend(sample_continuations(model, chunk, seeds, sampling, pad_token_id=pad_id, eos_token_id=eos_token_id))
    nll, _ = teacher_nll_of_samples(teacher, prompts, samples, pad_id=pad_id, batch_size=batch_size, device=device)
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
    bodies = [[token for token in sample if token not in eos] for sample in samples]
    return {"teacher_nll_of_samples": nll, "distinct_2": distinct_n(bodies, 2),
            "loop_rate": sum(loops(body) for body in bodies) / len(bodies) if bodies else 0.0,
            "sample_tokens": sum(len(sample) for sample in samples) / max(len(samples), 1)}


__all__ = ["distinct_n", "loops", "prompt_length", "sample_quality", "teacher_nll_of_samples"]
