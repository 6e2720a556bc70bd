"""The task interface: everything task-specific that the engine needs, declared in one module per task.

A task says which model class it trains, which data settings it reads, how records become examples and batches,
which logit positions are distilled and against which targets, which layer stacks feed feature terms (hidden states,
attention), how a student is evaluated, and how a student samples (for on-policy distillation). The training loop,
the objective and the teacher signals are task-agnostic.
A task's logits are *aligned* with its targets: for causal LMs position t of the aligned logits predicts token t+1.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch

from lmdistill.config import DataConfig, RunConfig, SamplingConfig, TermConfig
from lmdistill.errors import UserError
from lmdistill.losses import registry
from lmdistill.models.capture import CapturedAttention
from lmdistill.models.stacks import FEATURE_KINDS, ONE_STACK, ONE_STACK_FEATURES, FeatureStack, resolve_stack

# Data settings every task reads: where the data is and how much of it.
COMMON_DATA_FIELDS = frozenset({"train", "eval", "eval_fraction", "dataset_split", "max_length", "max_examples"})


class Task(Protocol):
    name: ClassVar[str]
    model_class: ClassVar[type]  # the transformers Auto class of teacher and student
    lora_task_type: ClassVar[str]  # peft's task type for LoRA students
    data_fields: ClassVar[frozenset[str]]  # DataConfig fields it reads besides COMMON_DATA_FIELDS
    headless_logits: ClassVar[bool]  # logit terms may run fused from the last hidden state and the lm_head
    pipeline_tag: ClassVar[str]  # the Hugging Face Hub pipeline tag of a trained student (its model card)
    # The layer stacks whose hidden states / attention feed feature terms, by name (a term's `stack`); for each kind
    # the first stack that feeds it is the default. {} when feature terms do not apply.
    feature_stacks: ClassVar[dict[str, FeatureStack]]
    samples_from_prompts: ClassVar[bool]  # its students continue prompts (train.eval_samples can score samples)
    # The example and batch key whose token positions a teacher-signal cache is laid out along (its per-token logits
    # before align_positions: "input_ids" for causal LMs, "labels" for decoder positions); None: not cacheable.
    cached_positions: ClassVar[str | None]

    def bind_model(self, model) -> None:
        """Learn what collation needs from the student before the first batch (seq2seq: the model's own rule for
        decoder inputs); most tasks need nothing."""
        ...

    def load_datasets(self, data, tokenizer, seed: int) -> tuple[list[dict], list[dict] | None]: ...

    # Tasks whose data_fields include "streaming" also have ``stream_train(data, tokenizer)``: the training examples
    # as a stream with ``next_example()``, ``position()`` and ``restore(position)`` (lmdistill.data.streaming).

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments a *fresh* head takes from the loaded data (e.g. ``num_labels``)."""
        ...

    def collate(self, examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]: ...

    def output_logits(self, output, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The distilled logits of a model's ``output`` on ``batch``, aligned with :meth:`targets` (..., V); positions
        outside the task's distribution (e.g. question tokens in extractive QA) hold the dtype's lowest value."""
        ...

    def align_positions(self, per_token: torch.Tensor) -> torch.Tensor:
        """A per-token tensor (B, S, ...) aligned like :meth:`output_logits` (the last hidden state on the fused
        path, a cached teacher signal)."""
        ...

    def targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(targets, loss_mask) aligned with :meth:`output_logits`."""
        ...

    def stack_depths(self, model) -> dict[str, int]:
        """The number of blocks of each of :attr:`feature_stacks` in ``model`` (layer maps resolve against these)."""
        ...

    def stack_hidden_states(self, output) -> dict[str, tuple[torch.Tensor, ...]]:
        """Each hidden-state stack's L+1 states (B, S, H) from a model ``output`` run with output_hidden_states
        (index 0: the embeddings)."""
        ...

    def stack_attentions(self, records: CapturedAttention) -> dict[str, list]:
        """Each attention stack's captures, one per block in order, from the records of one forward pass."""
        ...

    def evaluate(self, student, teacher, examples: list[dict], pad_token_id: int, batch_size: int, device) -> dict[str, Any]: ...

    def rollout(self, student, batches: list[dict[str, torch.Tensor]], *, tokenizer, sampling: SamplingConfig,
                row_seeds: list[list[int]]) -> list[dict[str, torch.Tensor]]:
        """Each batch with its targets replaced by the student's own samples (on-policy distillation); the batches
        are one step's micro-batches, sampled together; ``row_seeds[b][r]`` seeds row r of batch b."""
        ...


class OneLayerStack:
    """Feature stacks of a task whose models have one layer stack (decoder-only LMs, encoders): a term reads the
    model's hidden_states and all its captured attention, and its layer map counts num_hidden_layers blocks."""

    feature_stacks = ONE_STACK_FEATURES

    def stack_depths(self, model) -> dict[str, int]:
        return {ONE_STACK: model.config.num_hidden_layers}

    def stack_hidden_states(self, output) -> dict[str, tuple[torch.Tensor, ...]]:
        return {ONE_STACK: output.hidden_states}

    def stack_attentions(self, records: CapturedAttention) -> dict[str, list]:
        return {ONE_STACK: list(records)}


def check_terms(task: Task, terms: list[TermConfig]) -> None:
    """UserError for the first feature term whose kind or ``stack`` the task's models do not have."""
    for term in terms:
        kind = registry.spec(term.name).kind
        if kind in FEATURE_KINDS:
            resolve_stack(task.feature_stacks, kind, term.stack, term=term.name, task=task.name)


def check_config(task: Task, config: RunConfig) -> None:
    """UserError naming the first setting that does not apply to ``task`` (set in the config but never read)."""
    check_terms(task, config.objective)
    if config.train.eval_samples and not task.samples_from_prompts:
        raise UserError(f"train.eval_samples scores text a student samples after a prompt; task {task.name} does not "
                        "continue prompts, so set train.eval_samples: 0")
    if any(teacher.cache is not None for teacher in config.teachers):
        require_cacheable(task)
    unused = sorted(set(changed_data_fields(config.data)) - COMMON_DATA_FIELDS - task.data_fields)
    if unused:
        raise UserError(f"data.{unused[0]} does not apply to task {task.name}; remove it from the config "
                        f"(task {task.name} reads data.{', data.'.join(sorted(COMMON_DATA_FIELDS | task.data_fields))})")


def changed_data_fields(data: DataConfig) -> list[str]:
    """The data fields set to something other than their default: a run's saved config.yaml writes every default
    out, and a field left at its default does nothing for any task, so it reloads for every task."""
    fields = type(data).model_fields
    return [name for name in data.model_fields_set
            if getattr(data, name) != fields[name].get_default(call_default_factory=True)]


def require_cacheable(task: Task) -> None:
    """UserError when ``task``'s teacher signal has no per-token layout a teacher cache can hold."""
    if task.cached_positions is None:
        raise UserError(f"teacher caches hold per-token signals (tasks causal_lm and seq2seq_lm); task {task.name} "
                        "distils from a live teacher, so use teacher.path")


def no_rollout(task_name: str) -> UserError:
    """The error for on-policy settings on a task whose outputs are not sampled."""
    return UserError(f"on_policy does not apply to task {task_name}: its outputs are not sampled text; remove on_policy")
