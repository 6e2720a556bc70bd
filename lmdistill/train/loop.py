"""The training loop: one readable function, on accelerate (CPU, one GPU, DDP, FSDP, DeepSpeed alike).

Each optimizer step takes one global batch (batch_size x accumulation x processes examples, in a seeded order that
depends only on the step number, so a resumed run sees exactly the same data). Losses are normalised by the valid
positions of the whole global batch, so any split of it gives the same gradients.
"""

from __future__ import annotations

import contextlib
from functools import partial
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from lmdistill.cache import cached_teacher_terms, check_terms_for_cache, open_run_cache
from lmdistill.config import RunConfig, dump_config
from lmdistill.data.collate import batches_for_epoch
from lmdistill.data.masking import mask_tokens, masking_generator
from lmdistill.data.sampling import row_seed
from lmdistill.errors import UserError
from lmdistill.models import capture as attention_capture
from lmdistill.train.features import forward_features, run_without_head, vocab_size
from lmdistill.preflight import run_preflight
from lmdistill.train import checkpoint as ckpt
from lmdistill.train.export import export_student, write_atomically
from lmdistill.train.logging import MetricsLog, progress_bar
from lmdistill.train.on_policy import should_use_student_samples, student_rollout
from lmdistill.train.objective import Features, Masks, Needs, build_terms, compute_terms, needs_of, projection_widths, total_loss
from lmdistill.train.setup import (
    StudentBundle, build_student, check_vocabularies, load_teacher, make_optimizer, plan_steps, tokenizer_source, warmup_cosine,
)
from lmdistill.models.loading import load_tokenizer
from lmdistill.tasks import get_task

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    output_dir: Path
    student_dir: Path
    steps: int
    final_loss: float
    skipped_steps: int
    stopped_early: bool = False


def distill(config: RunConfig, *, resume: bool = False, stop_after: int | None = None) -> RunResult:
    """Distil the teacher(s) into the student as ``config`` says; write the student, metrics and checkpoints.

    ``stop_after``: end cleanly after that optimizer step with a checkpoint, exactly as an interrupted run would
    (for time-sliced jobs); ``resume=True`` continues from the newest checkpoint in ``output_dir``.
    """
    accelerator = Accelerator(mixed_precision=config.train.precision, cpu=not torch.cuda.is_available())
    set_seed(config.seed)
    output_dir = Path(config.output_dir)
    resolved = config.model_dump(mode="json", exclude_none=True)
    fingerprint = ckpt.fingerprint(resolved)
    if accelerator.is_main_process:
        _prepare_output_dir(output_dir, resume)
        write_atomically(output_dir / "config.yaml", dump_config(config))
    accelerator.wait_for_everyone()

    tokenizer = load_tokenizer(tokenizer_source(config))
    masking = _masking_settings(config, tokenizer)
    cache_path = config.teachers[0].cache  # a teacher-signal cache replaces the teacher model (logit terms only)
    teachers = [] if cache_path else [load_teacher(t, task=config.task, seed=config.seed) for t in config.teachers]
    teacher = teachers[config.feature_teacher] if teachers else None  # hidden/attention features come from this one
    student = build_student(config.student, teacher, task=config.task, seed=config.seed)
    for each in teachers:
        check_vocabularies(student, each, tokenizer)
    teacher_shape = (teacher or student).config
    terms = build_terms(config.objective, student_layers=student.config.num_hidden_layers, teacher_layers=teacher_shape.num_hidden_layers)
    if cache_path:
        check_terms_for_cache(terms)
    needs = needs_of(terms)
    logits_only = Needs(logits=True, hidden_states=False, attentions=False, teacher=True)  # the other teachers
    if needs.attentions:
        attention_capture.enable_capture(student)
        attention_capture.enable_capture(teacher)
    # Large vocabularies: never materialise (tokens x vocab) logits; logit terms run fused from hidden states.
    fused = (needs.logits and config.task == "causal_lm" and cache_path is None and len(teachers) == 1
             and vocab_size(student) >= config.train.fused_vocab_threshold)
    run_teacher = partial(run_without_head, teacher) if fused else teacher
    if fused:
        log.info("vocabulary of %d tokens: logit terms use the fused chunked loss", vocab_size(student))
    bundle = StudentBundle(student, projection_widths(terms, student.config.hidden_size, teacher_shape.hidden_size))

    task = get_task(config.task)
    train_examples, eval_examples = task.load_datasets(config.data, tokenizer, config.seed)
    run_preflight(config, tokenizer=tokenizer, teacher=teacher, student=student, train_examples=train_examples,
                  device=accelerator.device).raise_for_errors()
    cache = open_run_cache(cache_path, tokenizer, train_examples) if cache_path else None
    train = config.train
    plan = plan_steps(len(train_examples), train.batch_size, train.gradient_accumulation_steps, accelerator.num_processes, train.max_steps, train.epochs)
    optimizer = make_optimizer(bundle, train.learning_rate, train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(plan.total_steps, train.warmup_steps, train.min_learning_rate_ratio))
    # The scheduler stays outside prepare(): accelerate would step it once per process; we step it once per step.
    bundle, optimizer = accelerator.prepare(bundle, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    for each in teachers:
        each.to(accelerator.device)

    start_step, skipped = 0, 0
    latest = ckpt.latest_checkpoint(output_dir) if resume else None
    if latest is not None:
        state = ckpt.load_checkpoint(accelerator, latest, fingerprint)
        start_step, skipped = state["step"], state.get("skipped_steps", 0)
        log.info("resumed from %s (step %d)", latest, start_step)

    def save(step: int) -> None:
        ckpt.save_checkpoint(accelerator, output_dir, step, {"step": step, "fingerprint": fingerprint, "skipped_steps": skipped}, train.keep_checkpoints)

    metrics = MetricsLog(output_dir, enabled=accelerator.is_main_process, resume_step=start_step)
    pad_id = tokenizer.pad_token_id
    rank, world, accumulation = accelerator.process_index, accelerator.num_processes, train.gradient_accumulation_steps
    orders: dict[int, list[list[int]]] = {}
    consecutive_bad, loss_value, step = 0, float("nan"), start_step
    started, tokens_seen = time.perf_counter(), 0
    # _StopSignal restores the previous handlers on any exit, so an in-process caller always gets Ctrl-C back.
    with progress_bar(train.progress and accelerator.is_main_process) as bar, _StopSignal() as stop:
        bar_task = bar.add_task("distill", total=plan.total_steps, completed=start_step, loss=float("nan"), tokens_per_second=0.0)
        while step < plan.total_steps:
            epoch, index = divmod(step, plan.steps_per_epoch)
            if epoch not in orders:
                orders = {epoch: batches_for_epoch(len(train_examples), plan.global_batch, config.seed, epoch)}
            global_indices = orders[epoch][index]
            # Micro-batch i of this process: its slice of the i-th accumulation chunk of the global batch.
            chunk = train.batch_size * world
            micro_indices = [global_indices[i * chunk + rank * train.batch_size:i * chunk + (rank + 1) * train.batch_size] for i in range(accumulation)]
            micro = [task.collate([train_examples[j] for j in indices], pad_id) for indices in micro_indices]
            micro = [{k: v.to(accelerator.device) for k, v in batch.items()} for batch in micro]
            if masking is not None:
                micro = [{**b, "input_ids": mask_tokens(b["input_ids"], b["attention_mask"], **masking,
                                                        generator=masking_generator(config.seed, step, i, rank))}
                         for i, b in enumerate(micro)]
            if config.on_policy is not None:
                micro = [_maybe_student_samples(config, accelerator.unwrap_model(bundle).student, tokenizer, b, step, i, rank)
                         for i, b in enumerate(micro)]
            loss_count = accelerator.reduce(sum(task.targets(b)[1].sum() for b in micro).float(), reduction="sum")
            token_count = accelerator.reduce(sum(b["attention_mask"].sum() for b in micro).float(), reduction="sum")
            progress = step / plan.total_steps
            step_values: dict[str, torch.Tensor] = {}
            step_loss = torch.zeros((), device=accelerator.device)
            for i, batch in enumerate(micro):
                sync = contextlib.nullcontext() if i == accumulation - 1 else accelerator.no_sync(bundle)
                with sync, accelerator.autocast():
                    teacher_features = (forward_features(run_teacher, batch, needs, task, grad=False, head_model=teacher if fused else None)
                                        if needs.teacher and teacher is not None else Features())
                    if len(teachers) > 1 and needs.logits:
                        teacher_features.mixture = [
                            (settings.weight, teacher_features.logits if each is teacher else
                             forward_features(each, batch, logits_only, task, grad=False).logits)
                            for settings, each in zip(config.teachers, teachers)
                        ]
                    student_features = forward_features(partial(bundle, without_head=fused), batch, needs, task, grad=True,
                                                        head_model=accelerator.unwrap_model(bundle).student if fused else None)
                    targets, loss_mask = task.targets(batch)
                    masks = Masks(loss=loss_mask, tokens=batch["attention_mask"].bool(), loss_count=loss_count, token_count=token_count)
                    if cache is None:
                        values = compute_terms(terms, student_features, teacher_features, targets, masks,
                                               accelerator.unwrap_model(bundle).projections, progress)
                    else:
                        sparse = cache.teacher_batch(micro_indices[i], batch["input_ids"].shape[1]).map(lambda t: task.align_logits(t).to(accelerator.device))
                        values = cached_teacher_terms(terms, student_features.logits, sparse, targets, masks, progress, vocab_size=cache.vocab_size)
                    loss = total_loss(terms, values, progress)
                    # DDP averages gradients over processes; the global normalisation already divides by everything.
                    accelerator.backward(loss * world)
                step_loss = step_loss + loss.detach()
                for label, value in values.items():
                    step_values[label] = step_values.get(label, 0.0) + value.detach()
            # Each process holds its share of the globally normalised loss: the sum over processes is the loss.
            step_loss = accelerator.reduce(step_loss, reduction="sum")
            step_values = {label: float(accelerator.reduce(value, reduction="sum")) for label, value in step_values.items()}
            tokens_seen += int(token_count)
            if not torch.isfinite(step_loss):
                skipped += 1
                consecutive_bad += 1
                optimizer.zero_grad(set_to_none=True)
                log.warning("step %d: non-finite loss, step skipped (%d in a row)", step, consecutive_bad)
                if consecutive_bad >= train.max_bad_steps:
                    save(step)
                    metrics.close()
                    raise UserError(
                        f"the loss was not finite for {consecutive_bad} consecutive steps (step {step}); the last good weights "
                        f"are in {ckpt.latest_checkpoint(output_dir)}; lower train.learning_rate or use precision: no"
                    )
            else:
                consecutive_bad = 0
                if train.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(bundle.parameters(), train.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            loss_value = float(step_loss)
            elapsed = time.perf_counter() - started
            bar.update(bar_task, completed=step, loss=loss_value, tokens_per_second=tokens_seen / max(elapsed, 1e-9))
            if step % train.log_every == 0 or step == plan.total_steps:
                record = {"step": step, "split": "train", "loss": loss_value, "lr": scheduler.get_last_lr()[0],
                          "tokens_per_second": tokens_seen / max(elapsed, 1e-9), "elapsed_s": elapsed}
                record.update({f"loss/{label}": value for label, value in step_values.items()})
                metrics.write(record)
            if eval_examples and train.eval_every and (step % train.eval_every == 0 or step == plan.total_steps):
                scores = task.evaluate(accelerator.unwrap_model(bundle).student, teacher if needs.teacher else None,
                                          eval_examples, pad_id, train.batch_size, accelerator.device)
                metrics.write({"step": step, "split": "eval", **scores})
            if stop_after is not None and step >= stop_after:
                stop.requested = True
            if (train.save_every and step % train.save_every == 0) or stop.requested:
                save(step)
            if stop.requested:
                log.warning("stopped at step %d; resume with --resume", step)
                break
    metrics.close()
    if step == plan.total_steps:
        save(step)
    student_dir = output_dir / "student"
    if accelerator.is_main_process:
        export_student(accelerator.unwrap_model(bundle), tokenizer, student_dir)
    accelerator.wait_for_everyone()
    return RunResult(output_dir, student_dir, step, loss_value, skipped, stopped_early=step < plan.total_steps)


def _maybe_student_samples(config: RunConfig, student, tokenizer, batch, step: int, micro_index: int, rank: int):
    """GKD: with probability lmbda replace the batch's completions by the student's own samples (same prompts).

    The decision depends on (seed, step, micro-batch) only, so every process and a resumed run make the same one."""
    if not should_use_student_samples(config.seed, step, micro_index, config.on_policy.lmbda):
        return batch
    generator = torch.Generator().manual_seed(row_seed(config.seed, step, micro_index, rank))
    return student_rollout(student, batch, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                           sampling=config.on_policy.sampling, generator=generator)


def _masking_settings(config: RunConfig, tokenizer) -> dict | None:
    """``mask_tokens`` keyword arguments for ``data.mask_probability`` (None when 0); a tokenizer without a mask
    token is a UserError."""
    if config.data.mask_probability == 0:
        return None
    if tokenizer.mask_token_id is None:
        raise UserError(f"data.mask_probability={config.data.mask_probability} needs a tokenizer with a mask token and "
                        f"this one has none; set data.mask_probability: 0 or use a tokenizer with [MASK]")
    return {"probability": config.data.mask_probability, "mask_token_id": tokenizer.mask_token_id,
            "protected_ids": sorted(set(tokenizer.all_special_ids))}


def _prepare_output_dir(output_dir: Path, resume: bool) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"output_dir {str(output_dir)!r} cannot be written ({error.strerror}); choose a writable directory") from None
    if not resume and ckpt.latest_checkpoint(output_dir) is not None:
        raise UserError(f"{output_dir} already holds checkpoints of a run; pass --resume to continue it or choose a new output_dir")


class _StopSignal:
    """SIGINT/SIGTERM request a checkpoint and a clean exit at the end of the current step."""

    def __init__(self):
        self.requested = False
        self._previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. inside some test runners): keep default handling
                pass

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __enter__(self) -> "_StopSignal":
        return self

    def __exit__(self, *exc_info) -> None:
        self.restore()

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
