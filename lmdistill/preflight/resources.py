"""Rough resource estimates: checkpoint size vs free disk, parameters + activations vs free (GPU) memory.

Estimates are deliberately simple and say so ("~"): they catch a run that cannot fit, not a tight squeeze.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from lmdistill.config import RunConfig
from lmdistill.models.loading import count_parameters
from lmdistill.preflight.report import PreflightReport

GIB = 1024**3
_MARGIN_BYTES = 64 * 1024**2  # tensorboard, metrics, configs, tokenizer files
_ACTIVATION_TENSORS_PER_LAYER = 16  # hidden-sized tensors a transformer block keeps for backward (rough)


def checkpoint_bytes(student_parameters: int, keep_checkpoints: int) -> int:
    """Disk a run needs: (keep + 1 being written) checkpoints of params x (4 B weights + 8 B Adam), the exported
    student (4 B per param), +10% and a fixed margin."""
    per_checkpoint = student_parameters * (4 + 8)
    return int(((keep_checkpoints + 1) * per_checkpoint + 4 * student_parameters) * 1.1) + _MARGIN_BYTES


def existing_ancestor(path: Path) -> Path:
    """The nearest part of ``path`` (itself included) that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(report: PreflightReport, config: RunConfig, student_parameters: int | None) -> None:
    """output_dir must be creatable and writable, with room for the checkpoints."""
    target = Path(config.output_dir).expanduser()
    base = existing_ancestor(target)
    if not base.is_dir():
        report.error("output dir", f"output_dir {config.output_dir!r} cannot be created: {base} is a file; choose a directory path")
        return
    if not os.access(base, os.W_OK | os.X_OK):
        report.error("output dir", f"output_dir {config.output_dir!r} cannot be written ({base} is read-only); choose a writable directory")
        return
    if student_parameters is None:
        report.warning("disk", "checkpoint size not estimated (student not loaded)")
        return
    needed = checkpoint_bytes(student_parameters, config.train.keep_checkpoints)
    free = shutil.disk_usage(base).free
    line = f"~{needed / GIB:.2f} GiB for {config.train.keep_checkpoints} checkpoints + export, {free / GIB:.1f} GiB free at {base}"
    if free < needed:
        report.error("disk", f"{line}; free space or lower train.keep_checkpoints")
    else:
        report.ok("disk", line)


def parameter_bytes(model: Any) -> int:
    """Bytes of a model's parameters in their current dtype (tied tensors once)."""
    seen, total = set(), 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel() * parameter.element_size()
    return total


def activation_bytes(config: RunConfig, student: Any, teacher: Any | None) -> int:
    """~ activations of one micro-batch: hidden tensors per layer (student, kept for backward) + logits of both
    models in float32 (student logits, their log-softmax and gradient; teacher logits and log-softmax)."""
    tokens = config.train.batch_size * config.data.max_length
    shape = student.config
    hidden = tokens * shape.num_hidden_layers * shape.hidden_size * _ACTIVATION_TENSORS_PER_LAYER * 4
    vocab = student.get_output_embeddings().weight.shape[0] if student.get_output_embeddings() is not None else 2
    logits = tokens * vocab * 4 * (3 + (2 if teacher is not None else 0))
    return hidden + logits


def available_memory(device: torch.device) -> tuple[int, str]:
    """(free bytes, description) on ``device``: CUDA free memory, else MemAvailable of the host."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}"
    try:
        import psutil

        return int(psutil.virtual_memory().available), "RAM available"
    except ImportError:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) * 1024, "RAM available"


def check_memory(report: PreflightReport, config: RunConfig, student: Any, teacher: Any | None, device: torch.device) -> None:
    """Parameters (teacher in its dtype; student + grads + Adam) and activations against the device's free memory.

    Models already built on the CPU are resident: on a CPU run only what training adds is compared with free RAM.
    """
    student_bytes = parameter_bytes(student)
    teacher_bytes = parameter_bytes(teacher) if teacher is not None else 0
    training_state = student_bytes * 3  # gradients (1x) + Adam moments (2x), same dtype as the weights
    activations = activation_bytes(config, student, teacher)
    resident = student_bytes + teacher_bytes if device.type == "cuda" else 0
    needed = resident + training_state + activations
    free, where = available_memory(device)
    dtypes = f"teacher {_dtype(teacher)}, student {_dtype(student)}"
    line = (f"~{needed / GIB:.2f} GiB more (teacher {teacher_bytes / GIB:.2f}, student {student_bytes / GIB:.2f} + "
            f"grads/Adam, activations {activations / GIB:.2f}); {free / GIB:.1f} GiB {where}; {dtypes}")
    if needed > free:
        report.error("memory", f"{line}; lower train.batch_size or data.max_length, or use a smaller dtype")
    elif needed > 0.8 * free:
        report.warning("memory", f"{line}; close to the limit")
    elif device.type == "cpu" and "float16" in dtypes:
        report.warning("memory", f"{line}; half precision on CPU is slow: prefer float32 there")
    else:
        report.ok("memory", line)


def _dtype(model: Any | None) -> str:
    if model is None:
        return "none"
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def student_parameter_count(student: Any) -> int:
    return count_parameters(student)
