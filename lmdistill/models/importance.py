"""How much each transformer block matters, measured on a few calibration batches (depth pruning by importance).

Two scores, one per block, higher = more important:

- **block influence** (ShortGPT, Men et al. 2024): ``BI_i = 1 − mean_t cos(x_i,t, x_{i+1},t)`` over the real (non-pad)
  positions t, where ``x_i`` is the block's input hidden state and ``x_{i+1}`` its output. A block that barely turns
  its input is cheap to drop. One forward pass.
- **loss increase** (Minitron, Muralidharan et al. 2024, "perplexity" score): the calibration loss with block i
  skipped (its output replaced by its input) minus the loss of the whole model. One forward pass per block.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch

from lmdistill.models.heads import model_inputs
from lmdistill.models.pruning import layer_list

LossOf = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


@dataclass
class Calibration:
    """Batches of the run's training data for importance pruning, the task's loss on a batch, and the record of what
    the pruning measured and kept (written next to the run)."""

    batches: list[dict[str, torch.Tensor]]
    loss_of: LossOf
    record: dict[str, Any] = field(default_factory=dict)

    def layer_scores(self, model: torch.nn.Module, score: str) -> list[float]:
        if score == "loss_increase":
            return loss_increase(model, self.batches, self.loss_of)
        device = next(model.parameters()).device
        return block_influence(model, [{key: value.to(device) for key, value in batch.items()} for batch in self.batches])


def _hidden_of(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _first(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@torch.no_grad()
def block_influence(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> list[float]:
    """``1 − cos(input, output)`` of each block, averaged over every real token of ``batches``.

    Shapes: each batch holds ``input_ids`` (B, S) and ``attention_mask`` (B, S); a block's hidden states are (B, S, H).
    """
    blocks = layer_list(model)
    totals = torch.zeros(len(blocks), dtype=torch.float64)
    count = 0
    mask: torch.Tensor | None = None

    def hook(index):
        def record(module, args, kwargs, output):
            before, after = _hidden_of(args, kwargs).double(), _first(output).double()
            cosine = torch.nn.functional.cosine_similarity(before, after, dim=-1)  # (B, S)
            totals[index] += (1 - cosine)[mask].sum().cpu()
        return record

    handles = [block.register_forward_hook(hook(i), with_kwargs=True) for i, block in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            inputs = model_inputs(batch)
            mask = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).bool()
            count += int(mask.sum())
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return (totals / max(count, 1)).tolist()


@contextlib.contextmanager
def _skipped(block: torch.nn.Module) -> Iterator[None]:
    """Inside the context the block passes its input through unchanged (the rest of its output kept)."""
    def identity(module, args, kwargs, output):
        hidden = _hidden_of(args, kwargs)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = block.register_forward_hook(identity, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def loss_increase(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], loss_of: LossOf) -> list[float]:
    """Calibration loss with each block skipped minus the full model's: ``mean_b loss_b(without i) − mean_b loss_b``.

    ``loss_of(model, batch)`` is the task's mean loss on a batch (e.g. next-token cross-entropy on the loss positions).
    """
    batches = list(batches)
    was_training = model.training
    model.eval()
    try:
        def mean_loss() -> float:
            return sum(float(loss_of(model, batch)) for batch in batches) / len(batches)

        full = mean_loss()
        scores = []
        for block in layer_list(model):
            with _skipped(block):
                scores.append(mean_loss() - full)
    finally:
        model.train(was_training)
    return scores


def most_important(scores: list[float], count: int, *, keep_ends: bool = True) -> list[int]:
    """The ``count`` blocks with the highest scores, sorted by position; the first and last block are always kept
    when ``keep_ends`` (they map the embeddings in and out, ShortGPT and Minitron keep them too). Ties go to the
    earlier block."""
    if count >= len(scores):
        return list(range(len(scores)))
    forced = [0, len(scores) - 1] if keep_ends and count >= 2 else []
    rest = sorted((i for i in range(len(scores)) if i not in forced), key=lambda i: (-scores[i], i))
    return sorted(forced + rest[: count - len(forced)])
