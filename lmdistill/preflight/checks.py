"""Preflight checks on already-built objects (tokenizer, models, examples); each adds one line to a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmdistill.config import RunConfig, value_at
from lmdistill.data.causal import loss_positions
from lmdistill.losses import IGNORE_INDEX
from lmdistill.preflight.report import PreflightReport

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")
_CLASSIFICATION_TERMS_NOTE = "not applicable (one label per example)"


def output_rows(model: Any) -> int | None:
    """Rows of the output (vocabulary) projection, or None for models without one (e.g. classifiers)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(output.weight.shape[0]) if output is not None else None


def input_rows(model: Any) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


def has_own_tokenizer(path: str | None) -> bool:
    return bool(path) and Path(path).is_dir() and any((Path(path) / name).is_file() for name in _TOKENIZER_FILES)


def check_objective(report: PreflightReport, config: RunConfig) -> None:
    """Distillation temperatures must stay positive over the whole schedule (T <= 0 divides logits by zero)."""
    for term in config.objective:
        temperature = term.params.get("temperature")
        if temperature is None:
            continue
        lowest = min(value_at(temperature, 0.0), value_at(temperature, 1.0))
        if lowest <= 0:
            report.error("objective", f"{term.name}: temperature reaches {lowest:g}; a distillation temperature must be > 0 "
                                      "(set it to e.g. 1.0 or 2.0)")
            return
    report.ok("objective", ", ".join(f"{term.name}" for term in config.objective))


def check_tokenizer_match(report: PreflightReport, name: str, run_tokenizer: Any, other: Any, other_path: str) -> None:
    """A model with its own tokenizer must share the run tokenizer's vocabulary (same token -> same id)."""
    run_vocab, other_vocab = run_tokenizer.get_vocab(), other.get_vocab()
    if run_vocab != other_vocab:
        differing = sorted(set(run_vocab.items()) ^ set(other_vocab.items()), key=lambda item: item[1])
        token, token_id = differing[0] if differing else ("?", -1)
        report.error(name, f"the tokenizer in {other_path} differs from the run's ({len(other_vocab)} vs {len(run_vocab)} "
                           f"tokens; e.g. {token!r} -> {token_id}); distil between models that share a tokenizer")
        return
    for special in ("eos_token_id", "bos_token_id"):
        if getattr(run_tokenizer, special, None) != getattr(other, special, None):
            report.error(name, f"{special} is {getattr(other, special, None)} in {other_path} but "
                               f"{getattr(run_tokenizer, special, None)} in the run tokenizer; use one tokenizer for both models")
            return
    report.ok(name, f"{other_path} has the same {len(run_vocab)}-token vocabulary")


def check_vocab_sizes(report: PreflightReport, tokenizer: Any, teacher: Any | None, student: Any) -> None:
    """Both models must cover every tokenizer id; teacher and student may differ by padding rows only."""
    size = len(tokenizer)
    for label, model in (("student", student), ("teacher", teacher)):
        if model is not None and input_rows(model) < size:
            report.error("vocab sizes", f"the {label} embeds {input_rows(model)} tokens but the tokenizer has {size}; "
                                        f"use the tokenizer the {label} was trained with (set `tokenizer:`)")
            return
    student_rows, teacher_rows = output_rows(student), output_rows(teacher) if teacher is not None else None
    if student_rows is None or teacher_rows is None:
        report.ok("vocab sizes", f"tokenizer {size} tokens; models cover it")
    elif student_rows == teacher_rows:
        report.ok("vocab sizes", f"student and teacher {student_rows}, tokenizer {size}")
    else:
        report.warning("vocab sizes", f"student {student_rows} vs teacher {teacher_rows} rows differ by padding only "
                                      f"(tokenizer {size}); distilling over the shared {min(student_rows, teacher_rows)}")


def check_token_range(report: PreflightReport, examples: list[dict], models: dict[str, Any]) -> None:
    """Every token id in the data must index the models' embeddings (else an index error mid-step)."""
    largest = max((max(example["input_ids"]) for example in examples if example.get("input_ids")), default=-1)
    for label, model in models.items():
        if model is not None and largest >= input_rows(model):
            report.error("token ids", f"the data holds token id {largest} but the {label} embeds only {input_rows(model)} "
                                      "tokens; use the tokenizer that belongs to the models")
            return
    report.ok("token ids", f"largest id in the data {largest}")


def check_pad_eos(report: PreflightReport, tokenizer: Any, examples: list[dict]) -> None:
    """With pad == eos, real EOS tokens must still be in the loss (masks come from structure, not token values)."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad is None or pad != eos:
        report.ok("pad/eos", f"pad id {pad}, eos id {eos}")
        return
    if not examples or not isinstance(examples[0].get("labels"), list):
        report.ok("pad/eos", f"pad = eos = {eos}; {_CLASSIFICATION_TERMS_NOTE}")
        return
    if any(len(example["input_ids"]) != len(example["labels"]) for example in examples):
        # Encoder-decoder examples: labels are the target, a sequence of their own; every target token is in the loss.
        ended = sum(bool(example["labels"]) and example["labels"][-1] == eos for example in examples)
        report.ok("pad/eos", f"pad = eos = {eos}; {ended} of {len(examples)} targets end with EOS, in the loss")
        return
    positions = [(ids, labels) for example in examples for ids, labels in zip(example["input_ids"], example["labels"]) if ids == eos]
    in_loss = sum(label != IGNORE_INDEX for _, label in positions)
    if positions and not in_loss:
        report.error("pad/eos", f"pad = eos = {eos} and none of the data's {len(positions)} EOS tokens is in the loss, so the "
                                "student never learns to stop; mask padding by length, not by token value")
    elif positions:
        report.ok("pad/eos", f"pad = eos = {eos}; {in_loss} of {len(positions)} EOS tokens are in the loss")
    else:
        report.ok("pad/eos", f"pad = eos = {eos}; the data holds no EOS token")


def check_chat_template(report: PreflightReport, config: RunConfig, tokenizer: Any) -> bool:
    """Chat data needs the tokenizer's chat template; returns False when that fails."""
    if config.data.format != "chat":
        return True
    if not getattr(tokenizer, "chat_template", None):
        report.error("chat template", "data.format=chat needs a tokenizer with a chat template, and this one has none; "
                                      "use the instruct model's tokenizer (set `tokenizer:`) or use format prompt_completion")
        return False
    report.ok("chat template", "present")
    return True


def check_loss_fraction(report: PreflightReport, examples: list[dict]) -> None:
    """Positions in the loss over all positions: 0 is an error, under 1% a warning."""
    if not examples or not isinstance(examples[0].get("labels"), list):
        report.ok("loss positions", _CLASSIFICATION_TERMS_NOTE)
        return
    in_loss, total = loss_positions(examples)
    fraction = in_loss / total if total else 0.0
    if in_loss == 0:
        report.error("loss positions", "no position of the training data is in the loss; check data.format and the "
                                       "prompt/completion fields (completions may be cut off: raise data.max_length)")
    elif fraction < 0.01:
        report.warning("loss positions", f"only {fraction:.2%} of positions are in the loss ({in_loss} of {total}); "
                                         "most compute goes to prompts: raise data.max_length or shorten prompts")
    else:
        report.ok("loss positions", f"{fraction:.1%} of {total} positions")


def check_sequence_length(report: PreflightReport, config: RunConfig, models: dict[str, Any], examples: list[dict] | None) -> None:
    """data.max_length must fit the models' position embeddings; warn when examples hit the cap (truncated)."""
    limits = {label: getattr(model.config, "max_position_embeddings", None) for label, model in models.items() if model is not None}
    limits = {label: limit for label, limit in limits.items() if isinstance(limit, int)}
    for label, limit in limits.items():
        if config.data.max_length > limit:
            report.error("sequence length", f"data.max_length={config.data.max_length} exceeds the {label}'s "
                                            f"max_position_embeddings={limit}; set data.max_length <= {limit}")
            return
    capped = 0
    if examples and not (config.data.format == "text" and config.data.pack):
        capped = sum(len(example.get("input_ids", ())) >= config.data.max_length for example in examples)
    shown = ", ".join(f"{label} {limit}" for label, limit in limits.items()) or "models not checked"
    if capped:
        report.warning("sequence length", f"{capped} of {len(examples)} examples reach data.max_length="
                                          f"{config.data.max_length} and were likely truncated; raise it (positions: {shown})")
    else:
        report.ok("sequence length", f"max_length {config.data.max_length} (positions: {shown})")
