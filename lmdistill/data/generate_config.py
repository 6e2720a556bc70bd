"""The typed config of ``lmdistill generate``: teacher, prompts, sampling, filters and the output file.

Loaded like a run config (YAML + ``key=value`` overrides, first validation error as one line naming the field path),
reusing :func:`lmdistill.config.apply_overrides` and the run config's error formatting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from lmdistill.config import SamplingConfig, Strict, TeacherConfig, read_yaml, validate


class PromptsConfig(Strict):
    """Where the prompts come from and how a record becomes one.

    ``format: prompt``: the prompt is ``template.format(**record)`` when ``template`` is set, else the record's
    ``prompt_field``; with ``use_chat_template`` it is wrapped as one user message and rendered by the tokenizer's chat
    template. ``format: chat``: the record's ``messages_field`` (a trailing assistant turn, the reference, is dropped)
    rendered with the chat template and ``add_generation_prompt=True``.
    """

    source: str | list[str]  # files, a directory, or a `datasets` id (read by lmdistill.data.readers)
    dataset_split: str = "train"
    format: Literal["prompt", "chat"] = "prompt"
    prompt_field: str = "prompt"
    messages_field: str = "messages"
    template: str | None = None  # e.g. "Summarise the dialogue.\n{dialogue}\nSummary:"
    use_chat_template: bool = False
    keep_fields: list[str] = []  # record fields copied into each output row (e.g. references for evaluation)
    max_examples: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> "PromptsConfig":
        if self.format == "chat" and self.template is not None:
            raise ValueError("template applies to format: prompt; chat prompts are rendered by the chat template")
        return self


class GenerationSampling(SamplingConfig):
    """Sampling (``temperature`` is the *sampling* temperature; 0 = greedy) plus how many samples, seed, stops, batch."""

    num_samples: int = Field(default=1, ge=1)  # completions per prompt
    seed: int = 0
    stop: list[str] = []  # the completion is cut before the first occurrence of any of these
    batch_size: int = Field(default=8, ge=1)  # (prompt, sample) pairs per model.generate call
    num_beams: int = Field(default=1, ge=1)  # beam search (encoder-decoder teachers; needs temperature 0)

    @model_validator(mode="after")
    def _beams_are_deterministic(self) -> "GenerationSampling":
        if self.num_beams > 1 and self.temperature > 0:
            raise ValueError("num_beams > 1 is beam search: set temperature: 0 (or num_beams: 1 to sample)")
        return self

    @field_validator("stop")
    @classmethod
    def _non_empty(cls, stop: list[str]) -> list[str]:
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")
        return stop


class FiltersConfig(Strict):
    """Which generated rows are kept; a filtered row is counted in ``<output>.filtered.jsonl``, never regenerated."""

    min_completion_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    deduplicate: bool = False  # drop a row whose (prompt, completion) equals an earlier kept row's
    regex: str | None = None  # re.search on the completion must match
    callable: str | None = None  # "module:function", called with the row dict, returns True to keep

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str | None) -> str | None:
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as error:
                raise ValueError(f"not a valid regular expression ({error})") from None
        return regex

    @field_validator("callable")
    @classmethod
    def _module_function(cls, target: str | None) -> str | None:
        if target is not None and not re.fullmatch(r"[\w.]+:[\w.]+", target):
            raise ValueError("write it as 'module:function', e.g. my_filters:keep_row")
        return target

    @model_validator(mode="after")
    def _ordered(self) -> "FiltersConfig":
        low, high = self.min_completion_tokens, self.max_completion_tokens
        if low is not None and high is not None and low > high:
            raise ValueError("min_completion_tokens is larger than max_completion_tokens")
        return self


class GenerateConfig(Strict):
    """A teacher pseudo-data generation job (sequence-level KD data)."""

    teacher: TeacherConfig
    tokenizer: str | None = Field(default=None, validate_default=True)  # default: the teacher's path
    prompts: PromptsConfig
    sampling: GenerationSampling = GenerationSampling()
    output: str  # a .jsonl file; rows are appended, a rerun resumes
    filters: FiltersConfig = FiltersConfig()
    backend: Literal["transformers", "vllm"] = Field(default="transformers", validate_default=True)
    device: str = "auto"  # transformers backend: auto (cuda when available), cpu, cuda, cuda:1, ...

    @field_validator("output")
    @classmethod
    def _jsonl(cls, output: str) -> str:
        if not output.endswith(".jsonl"):
            raise ValueError("must be a .jsonl file path")
        return output

    @field_validator("teacher")
    @classmethod
    def _samplable(cls, teacher: TeacherConfig) -> TeacherConfig:
        if teacher.cache is not None:
            raise ValueError("teacher.cache holds no model to sample from; give teacher.path or teacher.config")
        return teacher

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer_source(cls, tokenizer: str | None, info: ValidationInfo) -> str | None:
        teacher = info.data.get("teacher")
        if tokenizer is None and teacher is not None and teacher.path is None:
            raise ValueError("a teacher built from `config` has no tokenizer; set tokenizer:")
        return tokenizer

    @field_validator("backend")
    @classmethod
    def _backend_source(cls, backend: str, info: ValidationInfo) -> str:
        teacher = info.data.get("teacher")
        if backend == "vllm" and teacher is not None and teacher.path is None:
            raise ValueError("backend vllm needs teacher.path (a model dir, hub id or .gguf file)")
        return backend


def parse_generate_config(raw: Any, *, source: str = "config") -> GenerateConfig:
    """Validate a raw mapping into a :class:`GenerateConfig`; the first error becomes a one-line UserError."""
    return validate(GenerateConfig, raw, source=source)


def load_generate_config(path: str | Path, overrides: list[str] | None = None) -> GenerateConfig:
    """Read a YAML generation config, apply ``key=value`` overrides, validate."""
    return parse_generate_config(read_yaml(path, overrides), source=str(path))
