"""How many optimizer steps a run takes and how its data is cut into global batches."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmdistill.errors import UserError


@dataclass(frozen=True)
class Plan:
    """How many optimizer steps the run takes and how the data is cut into global batches."""

    total_steps: int
    steps_per_epoch: int
    global_batch: int  # examples per optimizer step, all processes and accumulation steps together


def plan_steps(num_examples: int, batch_size: int, accumulation: int, processes: int, max_steps, epochs) -> Plan:
    global_batch = batch_size * accumulation * processes
    steps_per_epoch = num_examples // global_batch
    if steps_per_epoch == 0:
        raise UserError(
            f"the training data has {num_examples} examples, fewer than one global batch of {global_batch} "
            "(batch_size x gradient_accumulation_steps x processes); lower train.batch_size or add data"
        )
    total = max_steps if max_steps is not None else max(1, math.ceil(epochs * steps_per_epoch))
    return Plan(total_steps=total, steps_per_epoch=steps_per_epoch, global_batch=global_batch)
