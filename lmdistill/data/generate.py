"""Teacher pseudo data (sequence-level KD, Kim & Rush 2016): sample completions for prompts into a JSONL file.

Rows: {"prompt", "completion", "messages" (chat prompts: the conversation plus the assistant reply), "prompt_index",
"sample_index", "teacher", "sampling", "finish_reason" (eos | stop | length), kept record fields}. The file is
training data as it stands: ``data: {train: OUT.jsonl, format: prompt_completion}`` (or ``format: chat``).

Work is the list of (prompt_index, sample_index) pairs in order, cut into batches of ``sampling.batch_size``. Each
pair samples from its own generator seeded by (seed, prompt_index, sample_index), so rows do not depend on their
batch neighbours. A rerun with the same config resumes: pairs already written (or filtered, see
:mod:`lmdistill.data.generate_store`) are skipped, a batch is regenerated whole when any of its pairs is missing
(same padding, so the same numerics) and only its missing rows are appended. ``prompts.max_examples`` is not part of
the pinned config, so a run can be extended to more prompts; nor is ``device``, so a run may resume on another machine
(rows then match up to the floating-point differences between devices).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

from lmdistill.data.filters import RowFilter
from lmdistill.data.generate_config import GenerateConfig
from lmdistill.data.generate_prompts import Prompt, build_prompts
from lmdistill.data.generate_store import append_rows, check_manifest, filtered_path, read_rows
from lmdistill.data.readers import read_records
from lmdistill.data.sampling import eos_set, row_seed, sample_continuations, sample_targets
from lmdistill.errors import UserError
from lmdistill.models.build import load_teacher
from lmdistill.models.loading import load_tokenizer, resolve_package_path

log = logging.getLogger(__name__)

# (prompt token ids per pair, seed per pair) -> per pair: generated token ids without the EOS, whether it ended on EOS
Sampler = Callable[[list[list[int]], list[int]], list[tuple[list[int], bool]]]


@dataclass(frozen=True)
class GenerateResult:
    """What a generation run did: rows written and filtered now, rows found from earlier runs, totals in the file."""

    output: Path
    written: int
    filtered: int
    skipped_existing: int
    total_rows: int
    total_filtered: int


def generate_pseudo_data(config: GenerateConfig) -> GenerateResult:
    """Sample ``sampling.num_samples`` teacher completions per prompt into ``config.output``; resumes a stopped run."""
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rows, filtered = read_rows(output), read_rows(filtered_path(output))
    check_manifest(output, pinned_settings(config), has_rows=bool(rows or filtered))
    done = {(r["prompt_index"], r["sample_index"]) for r in rows + filtered}

    tokenizer = load_tokenizer(config.tokenizer or config.teacher.path)
    records = read_records(config.prompts.source, dataset_split=config.prompts.dataset_split, max_examples=config.prompts.max_examples)
    prompts = build_prompts(records, tokenizer, config.prompts)
    row_filter = RowFilter(config.filters, tokenizer)
    row_filter.remember(rows)

    pairs = [(p, s) for p in range(len(prompts)) for s in range(config.sampling.num_samples)]
    size = config.sampling.batch_size
    batches = [pairs[start:start + size] for start in range(0, len(pairs), size)]
    sampler: Sampler | None = None
    written = dropped = 0
    for batch in batches:
        missing = [pair for pair in batch if pair not in done]
        if not missing:
            continue
        sampler = sampler or _make_sampler(config, tokenizer)
        generated = sampler([prompts[p].token_ids for p, _ in batch], [row_seed(config.sampling.seed, p, s) for p, s in batch])
        kept, rejected = [], []
        for (p, s), (token_ids, ended) in zip(batch, generated):
            if (p, s) in done:
                continue
            row = make_row(config, prompts[p], p, s, token_ids, ended, tokenizer)
            reason = row_filter.reason(row)
            if reason is None:
                kept.append(row)
            else:
                rejected.append({"prompt_index": p, "sample_index": s, "filtered": True, "reason": reason})
        append_rows(output, kept)
        append_rows(filtered_path(output), rejected)
        written, dropped = written + len(kept), dropped + len(rejected)
        log.info("generated %d/%d rows (%d filtered)", len(done) + written + dropped, len(pairs), dropped)
    skipped = sum(pair in done for pair in pairs)
    return GenerateResult(output, written, dropped, skipped, len(rows) + written, len(filtered) + dropped)


def pinned_settings(config: GenerateConfig) -> dict[str, Any]:
    """The settings a resume must match: everything but the output path, ``device`` and ``prompts.max_examples``."""
    settings = config.model_dump(mode="json", exclude={"output", "device"})
    settings["prompts"].pop("max_examples")
    if config.sampling.num_beams == 1:  # runs from before beam search existed resume unchanged
        settings["sampling"].pop("num_beams")
    return settings


def make_row(
    config: GenerateConfig, prompt: Prompt, prompt_index: int, sample_index: int, token_ids: list[int], ended_on_eos: bool, tokenizer: Any
) -> dict[str, Any]:
    """The output row for one sample: ``token_ids`` (EOS excluded) decoded, then cut before the first stop string."""
    finish = "eos" if ended_on_eos else "length"
    completion = tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    cut = min((i for i in (completion.find(stop) for stop in config.sampling.stop) if i >= 0), default=None)
    if cut is not None:
        completion, finish = completion[:cut], "stop"
    row: dict[str, Any] = {"prompt": prompt.text, "completion": completion}
    if prompt.messages is not None:
        row["messages"] = [*prompt.messages, {"role": "assistant", "content": completion}]
    row.update(
        prompt_index=prompt_index, sample_index=sample_index, teacher=teacher_name(config),
        sampling=config.sampling.model_dump(mode="json", exclude={"batch_size", "num_samples"} | ({"num_beams"} if config.sampling.num_beams == 1 else set())),
        finish_reason=finish,
    )
    row.update(prompt.kept)
    return row


def teacher_name(config: GenerateConfig) -> str:
    teacher = config.teacher
    return teacher.path if teacher.path is not None else f"random {teacher.config.get('model_type', '?')} (config)"


def _make_sampler(config: GenerateConfig, tokenizer: Any) -> Sampler:
    if config.backend == "vllm":
        return _vllm_sampler(config, tokenizer)
    # A `config` teacher (tests, smoke runs) gets seed-0 weights, the same as a run config with seed 0 builds, so the
    # sampling seed changes the samples and never the teacher.
    encoder_decoder = is_encoder_decoder(config.teacher)
    if config.sampling.num_beams > 1 and not encoder_decoder:
        raise UserError("sampling.num_beams > 1 is for encoder-decoder teachers; a causal teacher samples or decodes "
                        "greedily (set num_beams: 1)")
    model_class = AutoModelForSeq2SeqLM if encoder_decoder else AutoModelForCausalLM
    teacher = load_teacher(config.teacher, model_class=model_class, seed=0)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    try:
        teacher.to(device)
    except (RuntimeError, AssertionError) as error:
        raise UserError(f"device {config.device!r} is not usable here ({str(error).splitlines()[0]}); set device: auto or cpu") from None
    eos = eos_set(tokenizer.eos_token_id) | eos_set(getattr(teacher.generation_config, "eos_token_id", None))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)

    def sample(prompt_ids: list[list[int]], seeds: list[int]) -> list[tuple[list[int], bool]]:
        if encoder_decoder:  # the prompt is the encoder's source; the output is the decoder's whole target
            continuations = sample_targets(teacher, prompt_ids, seeds, config.sampling, pad_token_id=pad,
                                           eos_token_id=sorted(eos), num_beams=config.sampling.num_beams)
        else:
            continuations = sample_continuations(teacher, prompt_ids, seeds, config.sampling, pad_token_id=pad, eos_token_id=sorted(eos))
        return [_split_eos(ids, eos) for ids in continuations]

    return sample


def is_encoder_decoder(teacher) -> bool:
    """Whether the teacher (a path or a config dict) is an encoder-decoder model (T5, BART ...), read from its config
    without loading weights; a source whose config cannot be read this way (e.g. GGUF) is taken as a causal LM."""
    if teacher.config is not None:
        settings = dict(teacher.config)
        try:
            return bool(AutoConfig.for_model(settings.pop("model_type", ""), **settings).is_encoder_decoder)
        except (ValueError, KeyError):
            return False
    path = resolve_package_path(teacher.path)
    if path.endswith(".gguf"):
        return False
    try:
        return bool(AutoConfig.from_pretrained(path).is_encoder_decoder)
    except (OSError, ValueError):
        return False


def _vllm_sampler(config: GenerateConfig, tokenizer: Any) -> Sampler:
    """vLLM generation with one seeded request per (prompt, sample) pair (not covered by the tests)."""
    try:
        import vllm
    except ImportError:
        raise UserError("backend: vllm needs the vllm package, which is not installed; pip install vllm or use backend: transformers") from None
    sampling = config.sampling
    eos = eos_set(tokenizer.eos_token_id)
    llm = vllm.LLM(model=config.teacher.path, tokenizer=config.tokenizer or config.teacher.path, seed=sampling.seed,
                   dtype="auto" if config.teacher.dtype == "auto" else config.teacher.dtype)

    def sample(prompt_ids: list[list[int]], seeds: list[int]) -> list[tuple[list[int], bool]]:
        params = [
            vllm.SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or -1,
                                max_tokens=sampling.max_new_tokens, seed=seed)
            for seed in seeds
        ]
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        return [_split_eos(list(out.outputs[0].token_ids), eos) for out in outputs]

    return sample


def _split_eos(token_ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    return (token_ids[:-1], True) if token_ids and token_ids[-1] in eos else (token_ids, False)
