"""Scores of generated text against references for translation and summarisation: corpus BLEU, chrF and TER
(sacrebleu defaults), ROUGE-1/2/L (rouge-score, mean F-measure) and METEOR (nltk with WordNet; None without it)."""

from __future__ import annotations

from collections.abc import Sequence

from lmdistill.eval.meteor import meteor
from lmdistill.eval.text_metrics import References, _reference_streams, bleu, chrf, rouge


def ter(predictions: Sequence[str], references: References) -> float:
    """Corpus TER (sacrebleu defaults: edits per reference word, 0-100+, lower is better)."""
    import sacrebleu

    return float(sacrebleu.corpus_ter(list(predictions), _reference_streams(predictions, references)).score)


def generation_scores(predictions: Sequence[str], references: References) -> dict[str, float | None]:
    """``bleu``, ``chrf``, ``ter`` (0-100), ``rouge1``, ``rouge2``, ``rougeL`` and ``meteor`` (0-1; None when WordNet is
    absent)."""
    return {"bleu": bleu(predictions, references), "chrf": chrf(predictions, references), "ter": ter(predictions, references),
            **rouge(predictions, references), "meteor": meteor(predictions, references)}
