"""Write the trained student as a standard Hugging Face model dir, atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file


def export_student(bundle, tokenizer, student_dir: Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Save config + safetensors + tokenizer (loadable by ``AutoModel*.from_pretrained``) and, separately,
    ``projections.safetensors`` with the learned projection heads when there are any.

    ``weights``: the bundle's whole state dict (``accelerator.get_state_dict``), which a sharded student (FSDP,
    DeepSpeed ZeRO-3) does not hold in its modules; without it the modules' own weights are saved.
    """
    student_dir = Path(student_dir)
    temporary = student_dir.with_name(f".{student_dir.name}.tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    student = bundle.student
    student_weights = projection_weights = None
    if weights is not None:
        student_weights = _under(weights, "student.")
        projection_weights = _under(weights, "projections.")
    if hasattr(student, "merge_and_unload") and getattr(student, "lmdistill_merge", True):
        # LoRA: a plain model dir with the adapters merged in (a copy, so training could go on).
        import copy

        student, student_weights = copy.deepcopy(student).merge_and_unload(), None
    student.save_pretrained(temporary, safe_serialization=True, state_dict=student_weights)
    if tokenizer is not None:
        tokenizer.save_pretrained(temporary)
    if len(bundle.projections):
        if projection_weights is None:
            projection_weights = {f"{label}.weight": layer.weight for label, layer in bundle.projections.items()}
        save_file({name: value.detach().contiguous().cpu() for name, value in projection_weights.items()},
                  str(temporary / "projections.safetensors"))
    if student_dir.exists():
        shutil.rmtree(student_dir)
    os.replace(temporary, student_dir)
    return student_dir


def _under(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name.removeprefix(prefix): value for name, value in weights.items() if name.startswith(prefix)}
