"""The training loop: build the run, step it, log, evaluate, checkpoint, export (on accelerate: CPU, one GPU, DDP,
FSDP, DeepSpeed alike). Everything a step needs is built before the first one (:func:`build_run`); a step is one
call (:func:`train_step`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from lmdistill.config import RunConfig, SamplingConfig
from lmdistill.eval.sample_quality import prompt_length, sample_quality
from lmdistill.errors import UserError
from lmdistill.report.model_card import write_model_card
from lmdistill.report.publish import push_run
from lmdistill.train import checkpoint as ckpt
from lmdistill.train.distributed import unsharded_root
from lmdistill.train.export import export_student
from lmdistill.train.metrics_log import MetricsLog
from lmdistill.train.progress import ProgressReport
from lmdistill.train.run import Run, build_run
from lmdistill.train.step import train_step
from lmdistill.train.stop import StopSignal

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
    run = build_run(config, resume=resume)
    train, main = config.train, run.accelerator.is_main_process
    total, step, loss, bad_in_a_row = run.plan.total_steps, run.start_step, float("nan"), 0
    metrics = MetricsLog(run.output_dir, enabled=main, resume_step=step, accelerator=run.accelerator,
                         project=train.tracker_project, settings=config.model_dump(mode="json", exclude_none=True))
    started, tokens_seen = time.perf_counter(), 0
    with ProgressReport(total, step, enabled=train.progress and main, interval_s=train.progress_seconds) as progress, StopSignal() as stop:
        while step < total:
            result = train_step(run, step)
            bad_in_a_row = 0 if result.finite else bad_in_a_row + 1
            if not result.finite:
                _skip_bad_step(run, step, bad_in_a_row, metrics)
            run.scheduler.step()  # after the bad-step check: a run stopped there resumes with the step's own rate
            step, loss, tokens_seen = step + 1, result.loss, tokens_seen + result.tokens
            run.tokens_trained += result.tokens
            elapsed = time.perf_counter() - started
            progress.update(step, loss, tokens_seen / max(elapsed, 1e-9))
            if step % train.log_every == 0 or step == total:
                metrics.write({"step": step, "split": "train", "loss": loss, "lr": run.scheduler.get_last_lr()[0],
                               "tokens_per_second": tokens_seen / max(elapsed, 1e-9), "elapsed_s": elapsed,
                               "tokens": run.tokens_trained,
                               **{f"loss/{label}": value for label, value in result.values.items()}})
            if run.eval_examples and train.eval_every and (step % train.eval_every == 0 or step == total):
                teacher_model = run.teacher.model if run.teacher is not None else None
                eval_started = time.perf_counter()
                with unsharded_root(run.bundle):  # every process evaluates: a sharded student needs all of them
                    scores = run.task.evaluate(run.student, teacher_model, run.eval_examples, run.tokenizer.pad_token_id,
                                               train.batch_size, run.accelerator.device)
                    if train.eval_samples:
                        scores |= _sample_scores(run, teacher_model)
                metrics.write({"step": step, "split": "eval", **scores, "eval_s": time.perf_counter() - eval_started})
            stop.requested = stop.requested or (stop_after is not None and step >= stop_after)
            if (train.save_every and step % train.save_every == 0) or stop.requested or step == total:
                run.save(step)
            if stop.requested:
                log.warning("stopped at step %d; resume with --resume", step)
                break
    metrics.close()
    student_dir = run.output_dir / "student"
    weights = run.accelerator.get_state_dict(run.bundle)  # whole on the main process, also when sharded (a collective)
    if main:
        export_student(run.accelerator.unwrap_model(run.bundle), run.tokenizer, student_dir, weights)
        write_model_card(run.output_dir)
        hub = config.output
        if hub is not None and hub.push_to_hub and step == total:
            log.info("pushed to %s", push_run(run.output_dir, hub.push_to_hub, private=hub.private))
    run.accelerator.wait_for_everyone()
    return RunResult(run.output_dir, student_dir, step, loss, run.skipped_steps, stopped_early=step < total)


def _sample_scores(run: Run, teacher_model) -> dict[str, float]:
    """``eval/`` scores of the student's samples from the first ``train.eval_samples`` held-out prompts (the same
    prompts and seeds at every evaluation; ``train.eval_sampling``, else the on-policy sampling, else temperature 1);
    the teacher NLL of the samples needs a live teacher."""
    examples = run.eval_examples[:run.config.train.eval_samples]
    prompts = [example["input_ids"][:prompt_length(example)] for example in examples]
    train, on_policy = run.config.train, run.config.on_policy
    sampling = train.eval_sampling or (on_policy.sampling if on_policy is not None else SamplingConfig())
    scores = sample_quality(run.student, teacher_model if teacher_model is not None else run.student, prompts,
                            sampling=sampling, seed=run.config.seed, pad_id=run.tokenizer.pad_token_id,
                            eos_token_id=run.tokenizer.eos_token_id, batch_size=run.config.train.batch_size,
                            device=run.accelerator.device)
    if teacher_model is None:
        scores.pop("teacher_nll_of_samples")
    return {f"eval/{key}": value for key, value in scores.items()}


def _skip_bad_step(run: Run, step: int, bad_in_a_row: int, metrics: MetricsLog) -> None:
    """Count a non-finite step (its update was skipped); after ``train.max_bad_steps`` in a row, save and stop."""
    run.skipped_steps += 1
    log.warning("step %d: non-finite loss, step skipped (%d in a row)", step, bad_in_a_row)
    if bad_in_a_row >= run.config.train.max_bad_steps:
        run.save(step)
        metrics.close()
        raise UserError(
            f"the loss was not finite for {bad_in_a_row} consecutive steps (step {step}); the last good weights "
            f"are in {ckpt.latest_checkpoint(run.output_dir)}; lower train.learning_rate or use precision: no"
        )
