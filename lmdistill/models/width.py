"""Width pruning (Minitron, Muralidharan et al. 2024): drop the least active MLP neurons, attention heads (whole
key/value groups for grouped-query attention) and hidden channels, ranked on calibration batches.

Works on Llama-family decoders (Llama, SmolLM, Qwen2/3, Mistral: ``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``
and RMSNorm). The pruned model is an ordinary Hugging Face model of the same class with a smaller config. Importance
(activation magnitudes over the real tokens of the calibration batches):

- MLP neuron j of layer l: ``mean_t |a_t,j|``, a = the input of ``down_proj``;
- attention head h: ``mean_t ‖o_t,h‖₂``, o = the input of ``o_proj`` split into heads; a KV group scores the sum of
  its query heads;
- hidden channel c: ``mean_t |n_t,c|`` summed over every RMSNorm output n (Minitron's embedding-channel score).

Removing channels from the residual stream shrinks the RMSNorm's mean over channels; the kept norm weights are scaled
by ``sqrt(d / d')`` and its epsilon by ``d / d'``, so the pruned model computes exactly what the full model computes
with the pruned channels, neurons and heads zeroed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from lmdistill.errors import UserError
from lmdistill.models.heads import model_inputs
from lmdistill.models.pruning import layer_list


@dataclass
class WidthScores:
    """Importance per unit: ``neurons[l]`` (intermediate,), ``heads[l]`` (num_attention_heads,), ``channels`` (hidden,)."""

    neurons: list[torch.Tensor]
    heads: list[torch.Tensor]
    channels: torch.Tensor


def _check_supported(model: torch.nn.Module) -> None:
    block = layer_list(model)[0]
    attention, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    if (attention is None or mlp is None or not all(hasattr(attention, n) for n in names)
            or not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
            or "RMSNorm" not in type(block.input_layernorm).__name__ or model.config.model_type.startswith("gemma")):
        raise UserError(f"width pruning supports Llama-family decoders (Llama, SmolLM, Qwen2, Mistral); "
                        f"{type(model).__name__} is not one; prune depth only (from_teacher.count)")


def _norms(model: torch.nn.Module) -> list[torch.nn.Module]:
    blocks = layer_list(model)
    return [n for block in blocks for n in (block.input_layernorm, block.post_attention_layernorm)] + [model.model.norm]


@torch.no_grad()
def width_scores(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> WidthScores:
    """Activation importance of every neuron, head and hidden channel over the real tokens of ``batches``."""
    _check_supported(model)
    blocks = layer_list(model)
    config = model.config
    heads, head_dim = config.num_attention_heads, _head_dim(config)
    neurons = [torch.zeros(block.mlp.down_proj.in_features, dtype=torch.float64) for block in blocks]
    head_sums = [torch.zeros(heads, dtype=torch.float64) for _ in blocks]
    channels = torch.zeros(config.hidden_size, dtype=torch.float64)
    state = {"mask": None}

    def real(values: torch.Tensor) -> torch.Tensor:  # (B, S, ...) -> (tokens, ...)
        return values[state["mask"]].double()

    # Hooks return None: a returned value would replace the module's input or output.
    def on_down(index):
        def record(module, args):
            neurons[index].add_(real(args[0]).abs().sum(0).cpu())
        return record

    def on_o(index):
        def record(module, args):
            split = real(args[0]).reshape(-1, heads, head_dim)
            head_sums[index].add_(split.norm(dim=-1).sum(0).cpu())
        return record

    def on_norm(module, args, output):
        channels.add_(real(output).abs().sum(0).cpu())

    handles = []
    for index, block in enumerate(blocks):
        handles.append(block.mlp.down_proj.register_forward_pre_hook(on_down(index)))
        handles.append(block.self_attn.o_proj.register_forward_pre_hook(on_o(index)))
    handles += [norm.register_forward_hook(on_norm) for norm in _norms(model)]
    was_training, tokens = model.training, 0
    model.eval()
    try:
        device = next(model.parameters()).device
        for batch in batches:
            inputs = {key: value.to(device) for key, value in model_inputs(batch).items()}
            state["mask"] = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).bool()
            tokens += int(state["mask"].sum())
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    tokens = max(tokens, 1)
    return WidthScores([n / tokens for n in neurons], [h / tokens for h in head_sums], channels / tokens)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` highest scores, in their original order (ties to the earlier index)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:count]
    return torch.tensor(sorted(order), dtype=torch.long)


def prune_width(
    model: torch.nn.Module,
    scores: WidthScores,
    *,
    intermediate_size: int | None = None,
    num_key_value_heads: int | None = None,
    hidden_size: int | None = None,
) -> torch.nn.Module:
    """A smaller copy of ``model`` keeping the most important neurons, KV groups (with their query heads) and
    hidden channels; ``None`` keeps that dimension whole. Weights are copied; the model is left as it was."""
    _check_supported(model)
    config = model.config
    heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, _head_dim(config)
    group = heads // kv_heads
    intermediate_size = intermediate_size or config.intermediate_size
    num_key_value_heads = num_key_value_heads or kv_heads
    hidden_size = hidden_size or config.hidden_size
    for name, value, full in (("intermediate_size", intermediate_size, config.intermediate_size),
                              ("num_key_value_heads", num_key_value_heads, kv_heads), ("hidden_size", hidden_size, config.hidden_size)):
        if not 1 <= value <= full:
            raise UserError(f"width.{name}={value} must be between 1 and the model's {full}")

    channel_keep = _top(scores.channels, hidden_size)
    new_config = copy.deepcopy(config)
    new_config.intermediate_size, new_config.hidden_size = intermediate_size, hidden_size
    new_config.num_key_value_heads, new_config.num_attention_heads = num_key_value_heads, num_key_value_heads * group
    new_config.head_dim = head_dim
    if getattr(config, "rms_norm_eps", None) is not None:  # eps scales with the mean over channels (exactness)
        new_config.rms_norm_eps = config.rms_norm_eps * config.hidden_size / hidden_size
    pruned = type(model)(new_config).to(model.dtype)

    kept = _Kept.choose(model, scores, channel_keep, intermediate_size, num_key_value_heads)
    new_state = {key: kept.slice(key, tensor) for key, tensor in model.state_dict().items()}
    missing, unexpected = pruned.load_state_dict(new_state, strict=False)
    if unexpected or [k for k in missing if "rotary" not in k and k != "lm_head.weight"]:
        raise AssertionError(f"width pruning left weights unmatched: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        pruned.tie_weights()
    return pruned


@dataclass
class _Kept:
    """The indices each weight keeps: hidden channels, and per block the MLP neurons and the q / kv output rows."""

    channels: torch.Tensor
    neurons: list[torch.Tensor]
    q_rows: list[torch.Tensor]
    kv_rows: list[torch.Tensor]
    norm_scale: float
    block_of: dict[str, int]  # module name -> block index

    @classmethod
    def choose(cls, model, scores: WidthScores, channels: torch.Tensor, intermediate: int, kv_kept: int) -> "_Kept":
        config = model.config
        group, head_dim = config.num_attention_heads // config.num_key_value_heads, _head_dim(config)
        neurons, q_rows, kv_rows = [], [], []
        for layer_scores, head_scores in zip(scores.neurons, scores.heads):
            neurons.append(_top(layer_scores, intermediate))
            groups = _top(head_scores.reshape(-1, group).sum(-1), kv_kept)
            q_heads = (groups[:, None] * group + torch.arange(group)).reshape(-1)
            q_rows.append((q_heads[:, None] * head_dim + torch.arange(head_dim)).reshape(-1))
            kv_rows.append((groups[:, None] * head_dim + torch.arange(head_dim)).reshape(-1))
        blocks = {id(block): i for i, block in enumerate(layer_list(model))}
        block_of = {}
        for name, module in model.named_modules():
            parent = name.rpartition(".")[0]
            block_of[name] = blocks[id(module)] if id(module) in blocks else block_of.get(parent, -1)
        return cls(channels, neurons, q_rows, kv_rows, math.sqrt(config.hidden_size / len(channels)), block_of)

    def slice(self, key: str, tensor: torch.Tensor) -> torch.Tensor:
        module_name = key.rpartition(".")[0]
        leaf, layer = module_name.rpartition(".")[2], self.block_of.get(module_name, -1)
        rows, columns = self._rows_and_columns(key, leaf, layer)
        kept = tensor if rows is None else tensor[rows]
        if columns is not None and tensor.dim() == 2:  # a bias has output rows only
            kept = kept[:, columns]
        kept = kept.clone()
        if "norm" in leaf and leaf not in ("q_norm", "k_norm"):
            kept = kept * self.norm_scale  # the RMS over fewer channels is larger by sqrt(d / d')
        return kept

    def _rows_and_columns(self, key: str, leaf: str, layer: int):
        channels = self.channels
        if leaf in ("q_norm", "k_norm") or "rotary" in key:  # per-head norms (Qwen3) act over head_dim: unchanged
            return None, None
        if "norm" in leaf:
            return channels, None
        if leaf in ("embed_tokens", "lm_head"):
            return None, channels
        if layer < 0:
            raise UserError(f"width pruning does not know the weight {key}; prune depth only (from_teacher.count)")
        by_leaf = {
            "q_proj": (self.q_rows[layer], channels), "k_proj": (self.kv_rows[layer], channels),
            "v_proj": (self.kv_rows[layer], channels), "o_proj": (channels, self.q_rows[layer]),
            "gate_proj": (self.neurons[layer], channels), "up_proj": (self.neurons[layer], channels),
            "down_proj": (channels, self.neurons[layer]),
        }
        if leaf not in by_leaf:
            raise UserError(f"width pruning does not know the weight {key}; prune depth only (from_teacher.count)")
        return by_leaf[leaf]
