"""Students built from the teacher by keeping some of its layers, weights copied (DistilBERT / Minitron depth pruning)."""

from __future__ import annotations

import copy

import torch

from lmdistill.errors import UserError


def layer_list(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of transformer blocks: the largest ModuleList whose length is ``config.num_hidden_layers``."""
    count = model.config.num_hidden_layers
    candidates = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == count]
    if not candidates:
        raise UserError(f"cannot find the {count} transformer layers of {type(model).__name__}; pass an explicit student")
    return candidates[0]


def choose_layers(
    num_layers: int,
    *,
    layers: list[int] | None = None,
    every: int | None = None,
    first_last: int | None = None,
    count: int | None = None,
) -> list[int]:
    """The 0-based teacher layers to keep, sorted: explicit ``layers``, every k-th from 0, the first and last k, or
    ``count`` layers spread evenly with the first and last included (index round(i·(L−1)/(k−1)))."""
    if layers is not None:
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise UserError(f"student.from_teacher.layers {bad} out of range: the teacher has layers 0..{num_layers - 1}; choose layers in that range")
        return sorted(layers)
    if every is not None:
        return list(range(0, num_layers, every))
    if first_last is not None:
        if 2 * first_last > num_layers:
            raise UserError(f"student.from_teacher.first_last={first_last} keeps more than the teacher's {num_layers} layers")
        return list(range(first_last)) + list(range(num_layers - first_last, num_layers))
    if count is not None:
        if count > num_layers:
            raise UserError(f"student.from_teacher.count={count} is more than the teacher's {num_layers} layers")
        if count == 1:
            return [num_layers - 1]
        return [(2 * i * (num_layers - 1) + count - 1) // (2 * (count - 1)) for i in range(count)]
    raise UserError("student.from_teacher needs one of layers, every, first_last, count")


def student_from_teacher(teacher: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    """A copy of ``teacher`` with only the layers ``keep`` (weights copied), saved and reloaded like any HF model."""
    student = copy.deepcopy(teacher)
    blocks = layer_list(student)
    kept = torch.nn.ModuleList([blocks[i] for i in keep])
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index  # the KV cache indexes layers by position
    _replace_module(student, blocks, kept)
    config = student.config
    config.num_hidden_layers = len(keep)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(blocks):
        config.layer_types = [layer_types[i] for i in keep]
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    return student


def _replace_module(root: torch.nn.Module, old: torch.nn.Module, new: torch.nn.Module) -> None:
    for module in root.modules():
        for name, child in module.named_children():
            if child is old:
                setattr(module, name, new)
                return
    raise AssertionError("layer list not found in its own model")
