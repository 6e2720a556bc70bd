"""One optimizer step: the global batch cut into micro-batches, forward, objective, backward, update.

Each optimizer step takes one global batch (batch_size x accumulation x processes examples, in a seeded order that
depends only on the step number, so a resumed run sees exactly the same data). Losses are normalised by the valid
positions of the whole global batch, so any split of it gives the same gradients.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial

import torch

from lmdistill.objective import Masks, compute_terms, forward_features, total_loss
from lmdistill.train.run import Run
from lmdistill.train.transforms import STUDENT_SAMPLES


@dataclass
class StepResult:
    loss: float  # the globally normalised loss of the step (summed over processes)
    values: dict[str, float]  # each term's unweighted value
    tokens: int  # real tokens in the global batch
    finite: bool  # False: the update was skipped


def micro_batches(run: Run, step: int) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
    """(example indices, batch on the device) of each micro-batch this process takes at ``step``, transformed."""
    train, accelerator = run.config.train, run.accelerator
    global_indices, examples = run.batches.global_batch(step)
    rank, chunk = accelerator.process_index, train.batch_size * accelerator.num_processes
    # Micro-batch i of this process: its slice of the i-th accumulation chunk of the global batch.
    indices, batches = [], []
    for i in range(train.gradient_accumulation_steps):
        start = i * chunk + rank * train.batch_size
        indices.append(global_indices[start:start + train.batch_size])
        chosen = examples[start:start + train.batch_size]
        batches.append({k: v.to(accelerator.device) for k, v in run.task.collate(chosen, run.tokenizer.pad_token_id).items()})
    for transform in run.transforms:
        batches = transform(batches, step=step, rank=rank, student=run.student)
    return list(zip(indices, batches))


def micro_loss(run: Run, indices: list[int], batch: dict[str, torch.Tensor], masks_counts: tuple, progress: float):
    """(weighted loss, {label: value}) of one micro-batch: student forward, teacher signal, every term."""
    teacher = run.teacher.batch(batch, indices, run.needs, run.task) if run.teacher is not None else None
    student = forward_features(partial(run.bundle, without_head=run.headless), batch, run.needs, run.task, grad=True,
                               head_model=run.student if run.headless else None)
    targets, loss_mask = run.task.targets(batch)
    loss_count, token_count = masks_counts
    masks = Masks(loss=loss_mask, tokens=batch["attention_mask"].bool(), loss_count=loss_count, token_count=token_count)
    terms = [term for term in run.terms if term.applies_to(STUDENT_SAMPLES in batch)]
    values = compute_terms(terms, student, teacher, targets, masks, run.projections, progress)
    return total_loss(terms, values, progress), values


def train_step(run: Run, step: int) -> StepResult:
    """Forward, objective and backward over the step's micro-batches, then clip and update (skipped when the loss
    is not finite). The loop advances the scheduler."""
    accelerator, train = run.accelerator, run.config.train
    micro = micro_batches(run, step)
    loss_count = accelerator.reduce(sum(run.task.targets(batch)[1].sum() for _, batch in micro).float(), reduction="sum")
    token_count = accelerator.reduce(sum(batch["attention_mask"].sum() for _, batch in micro).float(), reduction="sum")
    progress = step / run.plan.total_steps
    step_loss = torch.zeros((), device=accelerator.device)
    step_values: dict[str, torch.Tensor] = {}
    for i, (indices, batch) in enumerate(micro):
        sync = contextlib.nullcontext() if i == len(micro) - 1 else accelerator.no_sync(run.bundle)
        with sync, accelerator.autocast():
            loss, values = micro_loss(run, indices, batch, (loss_count, token_count), progress)
            # DDP averages gradients over processes; the global normalisation already divides by everything.
            accelerator.backward(loss * accelerator.num_processes)
        step_loss = step_loss + loss.detach()
        for label, value in values.items():
            step_values[label] = step_values.get(label, 0.0) + value.detach()
    # Each process holds its share of the globally normalised loss: the sum over processes is the loss.
    step_loss = accelerator.reduce(step_loss, reduction="sum")
    finite = bool(torch.isfinite(step_loss))
    if finite:
        if train.max_grad_norm is not None:
            accelerator.clip_grad_norm_(run.bundle.parameters(), train.max_grad_norm)
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    values = {label: float(accelerator.reduce(value, reduction="sum")) for label, value in step_values.items()}
    return StepResult(float(step_loss), values, int(token_count), finite)
