"""Write the trained student as a standard Hugging Face model dir, atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from safetensors.torch import save_file


def export_student(bundle, tokenizer, student_dir: Path) -> Path:
    """Save config + safetensors + tokenizer (loadable by ``AutoModel*.from_pretrained``) and, separately,
    ``projections.safetensors`` with the learned projection heads when there are any."""
    student_dir = Path(student_dir)
    temporary = student_dir.with_name(f".{student_dir.name}.tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    student = bundle.student
    if hasattr(student, "merge_and_unload") and getattr(student, "lmdistill_merge", True):
        # LoRA: a plain model dir with the adapters merged in (a copy, so training could go on).
        import copy

        student = copy.deepcopy(student).merge_and_unload()
    student.save_pretrained(temporary, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(temporary)
    if len(bundle.projections):
        state = {f"{label}.weight": layer.weight.detach().contiguous().cpu() for label, layer in bundle.projections.items()}
        save_file(state, str(temporary / "projections.safetensors"))
    if student_dir.exists():
        shutil.rmtree(student_dir)
    os.replace(temporary, student_dir)
    return student_dir
