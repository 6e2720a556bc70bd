"""Students built from the teacher by keeping some of its layers, weights copied (DistilBERT / Minitron depth pruning).

Encoder-decoder teachers (T5, BART, Marian ...) have two stacks; :func:`seq2seq_student_from_teacher` keeps chosen
layers of each separately."""

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
    where: str = "from_teacher",
) -> list[int]:
    """The 0-based teacher layers to keep, sorted: explicit ``layers``, every k-th from 0, the first and last k, or
    ``count`` layers spread evenly with the first and last included (index round(i·(L−1)/(k−1)))."""
    if layers is not None:
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise UserError(f"student.{where}.layers {bad} out of range: the teacher has layers 0..{num_layers - 1}; choose layers in that range")
        return sorted(layers)
    if every is not None:
        return list(range(0, num_layers, every))
    if first_last is not None:
        if 2 * first_last > num_layers:
            raise UserError(f"student.{where}.first_last={first_last} keeps more than the teacher's {num_layers} layers")
        return list(range(first_last)) + list(range(num_layers - first_last, num_layers))
    if count is not None:
        if count > num_layers:
            raise UserError(f"student.{where}.count={count} is more than the teacher's {num_layers} layers")
        if count == 1:
            return [num_layers - 1]
        return [(2 * i * (num_layers - 1) + count - 1) // (2 * (count - 1)) for i in range(count)]
    raise UserError(f"student.{where} needs one of layers, every, first_last, count")


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


# Config attributes holding each stack's depth, per family: T5/mT5 name them num_layers / num_decoder_layers,
# BART/Marian/Pegasus encoder_layers / decoder_layers.
_DEPTH_ATTRIBUTES = {"encoder": ("num_layers", "encoder_layers"), "decoder": ("num_decoder_layers", "decoder_layers")}


def stack_layers(stack: torch.nn.Module) -> torch.nn.ModuleList:
    """The block list of an encoder or decoder stack: its one ModuleList child (T5Stack.block, BartEncoder.layers)."""
    lists = [child for child in stack.children() if isinstance(child, torch.nn.ModuleList)]
    if len(lists) != 1:
        raise UserError(f"cannot find the layer list of {type(stack).__name__}; pass an explicit student")
    return lists[0]


def seq2seq_layer_lists(model: torch.nn.Module) -> dict[str, torch.nn.ModuleList]:
    """{"encoder": blocks, "decoder": blocks} of an encoder-decoder model."""
    if not getattr(model.config, "is_encoder_decoder", False):
        raise UserError(f"student.from_teacher.encoder/decoder need an encoder-decoder teacher; {type(model).__name__} "
                        "has one stack: use from_teacher: {layers: [...]}")
    return {"encoder": stack_layers(model.get_encoder()), "decoder": stack_layers(model.get_decoder())}


def seq2seq_student_from_teacher(teacher: torch.nn.Module, keep: dict[str, list[int]]) -> torch.nn.Module:
    """A copy of the encoder-decoder ``teacher`` keeping layers ``keep["encoder"]`` of its encoder and
    ``keep["decoder"]`` of its decoder (a stack missing from ``keep`` stays whole), weights copied.

    T5 computes its relative position bias in the first block of each stack only; when that block is dropped, the
    new first block takes over the teacher's bias table, so positions still count.
    """
    student = copy.deepcopy(teacher)
    stacks = seq2seq_layer_lists(student)
    for side, indices in keep.items():
        blocks = stacks[side]
        kept = torch.nn.ModuleList([blocks[i] for i in indices])
        if indices[0] != 0:
            _move_position_bias(blocks[0], kept[0])
        for new_index, block in enumerate(kept):
            for module in block.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_index
        _replace_module(student, blocks, kept)
        names = [name for name in _DEPTH_ATTRIBUTES[side] if getattr(student.config, name, None) == len(blocks)]
        if not names:
            raise UserError(f"cannot find the {side} depth of {type(student.config).__name__}; pass an explicit student")
        for name in names:
            setattr(student.config, name, len(indices))
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    return student


def _move_position_bias(first: torch.nn.Module, new_first: torch.nn.Module) -> None:
    new_modules = dict(new_first.named_modules())
    for name, module in first.named_modules():
        if getattr(module, "has_relative_attention_bias", False) and name in new_modules:
            target = new_modules[name]
            target.has_relative_attention_bias = True
            target.relative_attention_bias = module.relative_attention_bias
