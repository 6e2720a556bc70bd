"""Evaluate saved models side by side: held-out perplexity, agreement with a teacher, size and CPU speed.

This is what ``lmdistill eval`` and the demo run; the result is the ``models`` mapping of ``evaluation.json`` that
the report reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmdistill.config import DataConfig, DataFormat, SamplingConfig
from lmdistill.data.causal import load_causal_datasets
from lmdistill.data.readers import read_records
from lmdistill.errors import UserError
from lmdistill.eval.bits_per_byte import text_bits_per_byte
from lmdistill.eval.footprint import measure_speeds, model_footprint, shape_key
from lmdistill.eval.held_out import causal_lm_scores
from lmdistill.eval.runner import eos_token_ids, evaluate_generation, greedy_from_ids
from lmdistill.eval.sample_quality import prompt_length, sample_quality
from lmdistill.models.loading import load_model, load_tokenizer


@dataclass
class Comparison:
    """``models``: metrics per model name (``evaluation.json``'s ``models``); ``samples``: held-out prompts with each
    model's greedy answer, side by side (``{"prompt": ..., "reference": ..., NAME: answer ...}``)."""

    models: dict[str, dict[str, Any]]
    samples: list[dict[str, str]] = field(default_factory=list)


def evaluate_model_dirs(models: dict[str, str | Path], data: str, **settings) -> dict[str, dict[str, Any]]:
    """Metrics per model name (``teacher`` first when given) on the held-out ``data``; see :func:`compare_model_dirs`."""
    return compare_model_dirs(models, data, **settings).models


def compare_model_dirs(
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
    samples: int = 0,
    speed_rounds: int = 3,
    sample_prompts: int = 0,
    sampling: SamplingConfig | None = None,
    sample_seed: int = 0,
) -> Comparison:
    """Every model: ``bits_per_byte`` of the held-out text (text data; each model with its own tokenizer, so models of
    different tokenizers compare), ``perplexity`` over the loss positions (completion tokens for prompt/completion or chat data),
    ``parameters``, ``size_on_disk_bytes``, ``layers``, ``latency_ms_per_example`` and ``tokens_per_second`` (CPU
    forward on one sequence of up to ``latency_tokens`` tokens) and ``decode_tokens_per_second`` (greedy decoding
    with the KV cache), measured once per model shape in interleaved rounds. With a teacher, each other model also
    gets ``top1_agreement`` and ``mean_token_kl`` = KL(teacher || model) per token. With ``reference_field`` (prompt
    data), greedy generations are scored with ROUGE-1/2/L, BLEU and chrF. ``samples`` > 0: the first ``samples``
    held-out prompts (the tokens before the first scored one) with every model's greedy answer. ``sample_prompts``
    > 0: each model samples once (``sampling``; default temperature 1, ``max_new_tokens``) from that many held-out
    prompts and gets ``distinct_2``, ``loop_rate``, ``sample_tokens`` and, with a teacher,
    ``teacher_nll_of_samples`` (:mod:`lmdistill.eval.sample_quality`; the teacher's row scores its own samples).
    """
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
    shown = [_prompt_and_answer(example, tokenizer) for example in examples[:samples]]
    sample_ids = [example["input_ids"][:prompt_length(example)] for example in examples[:sample_prompts]]
    sampling = sampling or SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens)
    comparison = Comparison({}, [{"prompt": prompt, "reference": answer} for prompt, _, answer in shown])
    teacher_model = load_model(str(teacher), what="teacher").eval() if teacher is not None else None
    # Bits per byte: every model reads the held-out text with its own tokenizer (comparable across tokenizers).
    texts = [str(r[text_field]) for r in read_records(data, max_examples=max_examples)] if data_format == "text" else None
    timed: dict[str, torch.nn.Module] = {}  # one model per shape stays loaded for the speed rounds
    timed_by_shape: dict[str, str] = {}
    shape_of: dict[str, str] = {}
    for name, folder in ordered.items():
        model = teacher_model if name == "teacher" else load_model(str(folder), what=f"model {name}").eval()
        own_tokenizer = _own_tokenizer(folder, tokenizer)
        # A model with another vocabulary is scored on its own tokens and not compared token by token with the teacher.
        same_vocabulary = own_tokenizer is tokenizer or own_tokenizer.get_vocab() == tokenizer.get_vocab()
        reference_teacher = None if name == "teacher" or not same_vocabulary else teacher_model
        own_examples = examples if same_vocabulary else load_causal_datasets(config, own_tokenizer, seed=0)[0]
        scores = causal_lm_scores(model, reference_teacher, own_examples, own_tokenizer.pad_token_id, batch_size, torch.device("cpu"))
        row: dict[str, Any] = {"layers": model.config.num_hidden_layers, **model_footprint(model), "perplexity": scores["perplexity"]}
        if reference_teacher is not None:
            row.update(top1_agreement=scores["top1_agreement"], mean_token_kl=scores["mean_token_kl"])
        if texts is not None:
            row["bits_per_byte"] = text_bits_per_byte(model, own_tokenizer, texts, max_length=max_length, batch_size=batch_size)["bits_per_byte"]
        if references is not None:
            row.update(evaluate_generation(model, tokenizer, prompts, references, max_new_tokens=max_new_tokens, batch_size=batch_size))
        if sample_ids and same_vocabulary:
            quality = sample_quality(model, teacher_model if teacher_model is not None else model, sample_ids,
                                     sampling=sampling, seed=sample_seed, pad_id=tokenizer.pad_token_id,
                                     eos_token_id=eos_token_ids(model, tokenizer), batch_size=batch_size, device=torch.device("cpu"))
            if teacher_model is None:
                quality.pop("teacher_nll_of_samples")
            row.update(quality)
        if shown:
            prompt_ids = ([ids for _, ids, _ in shown] if same_vocabulary else
                          [own_tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt, _, _ in shown])
            answers = greedy_from_ids(model, own_tokenizer, prompt_ids, max_new_tokens=max_new_tokens, batch_size=batch_size)
            for sample, answer in zip(comparison.samples, answers):
                sample[name] = answer
        comparison.models[name] = row
        shape_of[name] = shape_key(model)
        if shape_of[name] not in timed_by_shape:
            timed_by_shape[shape_of[name]], timed[name] = name, model
    # Speed is measured per shape (two students of one shape report the same figures), after the quality metrics.
    speeds = measure_speeds(timed, torch.tensor([examples[0]["input_ids"][:16]]),
                            torch.tensor([examples[0]["input_ids"][:latency_tokens]]), rounds=speed_rounds)
    for name, row in comparison.models.items():
        row.update(speeds[timed_by_shape[shape_of[name]]])
    return comparison


def _prompt_and_answer(example: dict[str, list[int]], tokenizer) -> tuple[str, list[int], str]:
    """(prompt text, prompt ids, reference answer) of a held-out example: the tokens before its first scored token
    (for plain text, its first 16 tokens), and the rest."""
    ids, first = example["input_ids"], prompt_length(example)
    return (tokenizer.decode(ids[:first], skip_special_tokens=False), ids[:first],
            tokenizer.decode(ids[first:], skip_special_tokens=True).strip())


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant figures, thousands separated (166.4 -> "166", 3.517 -> "3.52")."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{round(value, decimals):,.{decimals}f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.1f}x" if numerator and denominator else "-"


def _own_tokenizer(folder: str | Path, default):
    """The tokenizer saved with a model dir, else ``default`` (the run's)."""
    folder = Path(folder)
    if folder.is_dir() and any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return load_tokenizer(str(folder))
    return default


def summary_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Rows for a printed table: model, layers, parameters, decoding and forward speed-up vs the teacher, perplexity,
    agreement, KL; rounded to what a few hundred held-out tokens and a shared CPU can support."""
    teacher = results.get("teacher", {})
    rows = []
    for name, row in results.items():
        rows.append([name, str(row["layers"]), f"{row['parameters'] / 1e6:.0f}M",
                     _ratio(row.get("decode_tokens_per_second"), teacher.get("decode_tokens_per_second")),
                     _ratio(teacher.get("latency_ms_per_example"), row.get("latency_ms_per_example")),
                     significant(row["perplexity"]),
                     f"{row['top1_agreement']:.2f}" if "top1_agreement" in row else "-",
                     significant(row["mean_token_kl"], 2) if "mean_token_kl" in row else "-",
                     f"{row['bits_per_byte']:.3f}" if "bits_per_byte" in row else "-",
                     significant(row["teacher_nll_of_samples"]) if "teacher_nll_of_samples" in row else "-",
                     f"{row['distinct_2']:.2f}" if "distinct_2" in row else "-",
                     f"{row['loop_rate']:.2f}" if "loop_rate" in row else "-"])
    return rows


SUMMARY_COLUMNS = ("model", "layers", "params", "decode speed-up", "forward speed-up", "perplexity", "top-1 agree", "KL(t||m)",
                   "bits/byte", "teacher NLL of samples", "distinct-2", "loop rate")
