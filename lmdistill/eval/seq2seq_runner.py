"""``lmdistill eval --task seq2seq_lm``: saved encoder-decoder models (and a teacher) on held-out source/target pairs.

Each model generates from the sources alone (greedy or beam) and is scored with BLEU, chrF, TER, ROUGE-1/2/L and
METEOR; decoder perplexity is its NLL per reference target token; with a teacher, top-1 agreement and KL on the
same decoder positions, BLEU against the teacher's own outputs, and the decoding speed-up over the teacher.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from lmdistill.config import DataConfig, DataSource
from lmdistill.data.readers import read_records
from lmdistill.data.seq2seq import build_seq2seq_examples
from lmdistill.errors import UserError
from lmdistill.eval.footprint import model_footprint
from lmdistill.eval.seq2seq import generate_seq2seq, seq2seq_scores
from lmdistill.eval.text_metrics import bleu
from lmdistill.eval.translation_metrics import generation_scores
from lmdistill.models.loading import load_model, load_tokenizer


def evaluate_seq2seq_dirs(models: dict[str, str | Path], data: DataSource, *, teacher: str | Path | None = None,
                          source_field: str = "source", target_field: str = "target", source_prefix: str = "",
                          max_examples: int | None = 200, max_length: int = 256, max_new_tokens: int = 64,
                          num_beams: int = 1, batch_size: int = 16) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """(metrics per model name, outputs per model name); ``teacher`` comes first when given.

    Rows: ``layers`` (encoder+decoder), ``parameters``, ``ms_per_sentence`` (generation wall time over all
    sentences), the :func:`~lmdistill.eval.translation_metrics.generation_scores`, ``perplexity`` and, against a
    teacher, ``top1_agreement``, ``mean_token_kl``, ``bleu_vs_teacher`` and ``speedup``.
    """
    from transformers import AutoModelForSeq2SeqLM

    ordered = ({"teacher": teacher} if teacher is not None else {}) | dict(models)
    tokenizer = load_tokenizer(str(next(iter(ordered.values()))))
    records = read_records(data, max_examples=max_examples)
    config = DataConfig(train=data, source_field=source_field, target_field=target_field, source_prefix=source_prefix,
                        max_length=max_length)
    examples, _ = build_seq2seq_examples(records, tokenizer, config)
    if not examples:
        raise UserError("no evaluation pair has both a source and a target; check --data and the field names")
    sources = [record[source_field] for record in records if record[source_field].strip() and record[target_field].strip()]
    references = [record[target_field] for record in records if record[source_field].strip() and record[target_field].strip()]
    teacher_model = load_model(str(teacher), model_class=AutoModelForSeq2SeqLM, what="teacher").eval() if teacher else None
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[str]] = {}
    for name, folder in ordered.items():
        model = teacher_model if name == "teacher" else load_model(str(folder), model_class=AutoModelForSeq2SeqLM, what=f"model {name}").eval()
        started = time.perf_counter()
        predictions = generate_seq2seq(model, tokenizer, sources, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                       batch_size=batch_size, source_prefix=source_prefix, max_source_length=max_length)
        elapsed = time.perf_counter() - started
        reference_teacher = None if name == "teacher" else teacher_model
        scores = seq2seq_scores(model, reference_teacher, examples, tokenizer.pad_token_id, batch_size, torch.device("cpu"))
        row: dict[str, Any] = {"layers": f"{model.config.num_hidden_layers}+{_decoder_layers(model)}",
                               "parameters": model_footprint(model)["parameters"],
                               "ms_per_sentence": 1000 * elapsed / len(sources),
                               **generation_scores(predictions, references), "perplexity": scores["perplexity"]}
        if reference_teacher is not None:
            row.update(top1_agreement=scores["top1_agreement"], mean_token_kl=scores["mean_token_kl"],
                       bleu_vs_teacher=bleu(predictions, outputs["teacher"]),
                       speedup=results["teacher"]["ms_per_sentence"] / row["ms_per_sentence"])
        results[name], outputs[name] = row, predictions
    return results, outputs


def _decoder_layers(model) -> int:
    config = model.config
    for name in ("num_decoder_layers", "decoder_layers"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return config.num_hidden_layers
