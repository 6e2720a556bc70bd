"""Evaluate saved models side by side: held-out perplexity, agreement with a teacher, size and CPU speed.

This is what ``lmdistill eval`` and the demo run; the result is the ``models`` mapping of ``evaluation.json`` that
the report reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmdistill.config import DataConfig, DataFormat
from lmdistill.errors import UserError


def evaluate_model_dirs(
    models: dict[str, str | Path],
    data: str,
    *,
    teacher: str | Path | None = None,
    data_format: DataFormat = "text",
    text_field: str = "text",
    prompt_field: str = "prompt",
    completion_field: str = "completion",
    reference_field: str | None = None,
    max_examples: int | None = 200,
    max_length: int = 256,
    max_new_tokens: int = 64,
    batch_size: int = 4,
    latency_tokens: int = 128,
) -> dict[str, dict[str, Any]]:
    """Metrics per model name (``teacher`` first when given) on the held-out ``data``.

    Every model: ``bits_per_byte`` of the held-out text (text data; each model with its own tokenizer, so models of
    different tokenizers compare), ``perplexity`` over the loss positions (completion tokens for prompt/completion or chat data),
    ``parameters``, ``size_on_disk_bytes``, ``layers``, ``latency_ms_per_example`` and ``tokens_per_second`` (CPU
    forward on one sequence of up to ``latency_tokens`` tokens). With a teacher, each other model also gets
    ``top1_agreement`` and ``mean_token_kl`` = KL(teacher || model) per token. With ``reference_field`` (prompt data),
    greedy generations are scored with ROUGE-1/2/L, BLEU and chrF.
    """
    from lmdistill.data.causal import load_causal_datasets
    from lmdistill.data.readers import read_records
    from lmdistill.eval.footprint import measure_latency, model_footprint
    from lmdistill.eval.runner import evaluate_generation
    from lmdistill.models.loading import load_model, load_tokenizer
    from lmdistill.eval.held_out import causal_lm_scores
    from lmdistill.eval.bits_per_byte import text_bits_per_byte

    ordered = ({"teacher": teacher} if teacher is not None else {}) | dict(models)
    tokenizer = load_tokenizer(str(teacher if teacher is not None else next(iter(models.values()))))
    config = DataConfig(train=data, format=data_format, text_field=text_field, prompt_field=prompt_field,
                        completion_field=completion_field, max_length=max_length, pack=False, max_examples=max_examples)
    examples, _ = load_causal_datasets(config, tokenizer, seed=0)
    references: list[str] | None = None
    if reference_field is not None:
        if data_format != "prompt_completion":
            raise UserError("--reference-field needs prompt data: use --format prompt_completion")
        records = read_records(data, max_examples=max_examples)
        missing = [i for i, r in enumerate(records) if reference_field not in r]
        if missing:
            raise UserError(f"record {missing[0]} of {data} has no field {reference_field!r}; pass --reference-field with an existing field")
        prompts = [str(r[prompt_field]) for r in records]
        references = [str(r[reference_field]) for r in records]
    latency_input = torch.tensor([examples[0]["input_ids"][:latency_tokens]])
    teacher_model = load_model(str(teacher), what="teacher").eval() if teacher is not None else None
    # Bits per byte: every model reads the held-out text with its own tokenizer (comparable across tokenizers).
    texts = [str(r[text_field]) for r in read_records(data, max_examples=max_examples)] if data_format == "text" else None
    results: dict[str, dict[str, Any]] = {}
    for name, folder in ordered.items():
        model = teacher_model if name == "teacher" else load_model(str(folder), what=f"model {name}").eval()
        own_tokenizer = _own_tokenizer(folder, tokenizer)
        # A model with another vocabulary is scored on its own tokens and not compared token by token with the teacher.
        same_vocabulary = own_tokenizer is tokenizer or own_tokenizer.get_vocab() == tokenizer.get_vocab()
        reference_teacher = None if name == "teacher" or not same_vocabulary else teacher_model
        own_examples = examples if same_vocabulary else load_causal_datasets(config, own_tokenizer, seed=0)[0]
        scores = causal_lm_scores(model, reference_teacher, own_examples, own_tokenizer.pad_token_id, batch_size, torch.device("cpu"))
        row: dict[str, Any] = {"layers": model.config.num_hidden_layers, **model_footprint(model),
                               **measure_latency(model, latency_input), "perplexity": scores["perplexity"]}
        if reference_teacher is not None:
            row.update(top1_agreement=scores["top1_agreement"], mean_token_kl=scores["mean_token_kl"])
        if texts is not None:
            row["bits_per_byte"] = text_bits_per_byte(model, own_tokenizer, texts, max_length=max_length, batch_size=batch_size)["bits_per_byte"]
        if references is not None:
            row.update(evaluate_generation(model, tokenizer, prompts, references, max_new_tokens=max_new_tokens, batch_size=batch_size))
        results[name] = row
    return results


def _own_tokenizer(folder: str | Path, default):
    """The tokenizer saved with a model dir, else ``default`` (the run's)."""
    from lmdistill.models.loading import load_tokenizer

    folder = Path(folder)
    if folder.is_dir() and any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return load_tokenizer(str(folder))
    return default


def summary_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Rows for a printed table: model, layers, parameters, speed-up vs teacher, perplexity, agreement, KL."""
    teacher_latency = results.get("teacher", {}).get("latency_ms_per_example")
    rows = []
    for name, row in results.items():
        speed = f"{teacher_latency / row['latency_ms_per_example']:.2f}x" if teacher_latency else "-"
        rows.append([name, str(row["layers"]), f"{row['parameters'] / 1e6:.1f}M", speed, f"{row['perplexity']:.2f}",
                     f"{row['top1_agreement']:.3f}" if "top1_agreement" in row else "-",
                     f"{row['mean_token_kl']:.3f}" if "mean_token_kl" in row else "-",
                     f"{row['bits_per_byte']:.3f}" if "bits_per_byte" in row else "-"])
    return rows


SUMMARY_COLUMNS = ("model", "layers", "params", "speed-up", "perplexity", "top-1 agree", "KL(t||m)", "bits/byte")
