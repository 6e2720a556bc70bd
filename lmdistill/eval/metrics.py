"""All evaluation metrics in one import: token-level LM metrics, classification, and text generation."""

from lmdistill.eval.classification import accuracy, macro_f1, matthews_corrcoef
from lmdistill.eval.lm_metrics import (
    bits_per_byte,
    mean_token_kl,
    perplexity,
    token_kl_sum,
    token_nll_sum,
    top1_agreement,
    top1_match_count,
)
from lmdistill.eval.text_metrics import bleu, chrf, gsm8k_exact_match, gsm8k_final_answer, rouge

__all__ = [
    "accuracy",
    "bits_per_byte",
    "bleu",
    "chrf",
    "gsm8k_exact_match",
    "gsm8k_final_answer",
    "macro_f1",
    "matthews_corrcoef",
    "mean_token_kl",
    "perplexity",
    "rouge",
    "token_kl_sum",
    "token_nll_sum",
    "top1_agreement",
    "top1_match_count",
]
