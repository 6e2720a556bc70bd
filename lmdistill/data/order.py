"""Which examples each optimizer step trains on: the global batch of a step, and what a checkpoint keeps to go on.

In memory (:class:`ExampleOrder`): every epoch is a seeded permutation of the examples, so the global batch of a step
depends only on the step number and a resumed run needs nothing saved. A streamed corpus
(:class:`lmdistill.data.streaming.StreamedBatches`) is read in order, and its checkpoint keeps the stream's position.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

from lmdistill.data.collate import batches_for_epoch
from lmdistill.data.plan import Plan


class TrainBatches(Protocol):
    def global_batch(self, step: int) -> tuple[list[int], list[dict]]:
        """(example ids, examples) of the global batch of optimizer step ``step`` (0-based), in order."""
        ...

    def position(self, step: int) -> dict[str, Any] | None:
        """What a checkpoint saved before step ``step`` keeps so that :meth:`restore` continues there (None: nothing)."""
        ...

    def restore(self, position: dict[str, Any] | None, step: int) -> None:
        """Continue at step ``step`` from a :meth:`position` of a checkpoint."""
        ...


class ExampleOrder:
    """Examples in memory, each epoch a seeded permutation cut into global batches (see :func:`batches_for_epoch`)."""

    def __init__(self, examples: list[dict], plan: Plan, seed: int):
        self.examples, self.plan = examples, plan
        self._order = lru_cache(maxsize=1)(lambda epoch: batches_for_epoch(len(examples), plan.global_batch, seed, epoch))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return self._order(epoch)

    def global_batch(self, step: int) -> tuple[list[int], list[dict]]:
        epoch, index = divmod(step, self.plan.steps_per_epoch)
        indices = self._order(epoch)[index]
        return indices, [self.examples[i] for i in indices]

    def position(self, step: int) -> None:
        return None

    def restore(self, position: dict[str, Any] | None, step: int) -> None:
        pass
