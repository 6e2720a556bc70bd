"""Width pruning: the pruned model reloads with transformers and equals a masked forward of the unpruned model on
the kept neurons, heads and channels; the importance scores equal activation magnitudes computed by hand."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from conftest import tiny_llama_config
from lmdistill.errors import UserError
from lmdistill.models.width import WidthScores, prune_width, width_scores

VOCAB = 53


def _batches():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 4:] = 0
    return [{"input_ids": ids, "attention_mask": mask}]


def _masked_copy(model, neurons, heads, channels):
    """The unpruned model with everything width pruning removes set to zero: MLP neurons (down_proj columns), query
    heads (o_proj columns), hidden channels (embedding columns and every write into the residual stream)."""
    masked = type(model)(model.config)
    masked.load_state_dict(model.state_dict())
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    drop_channels = [c for c in range(model.config.hidden_size) if c not in channels]
    with torch.no_grad():
        masked.model.embed_tokens.weight[:, drop_channels] = 0
        for layer, block in enumerate(masked.model.layers):
            drop_neurons = [n for n in range(model.config.intermediate_size) if n not in neurons[layer]]
            block.mlp.down_proj.weight[:, drop_neurons] = 0
            for head in range(model.config.num_attention_heads):
                if head not in heads[layer]:
                    block.self_attn.o_proj.weight[:, head * head_dim:(head + 1) * head_dim] = 0
            block.self_attn.o_proj.weight[drop_channels] = 0
            block.mlp.down_proj.weight[drop_channels] = 0
            if block.self_attn.o_proj.bias is not None:
                block.self_attn.o_proj.bias[drop_channels] = 0
    return masked.eval()


def _scores(model, seed=0):
    """Distinct random scores, so which units are kept is known in advance."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    return WidthScores([torch.rand(config.intermediate_size, generator=generator) for _ in range(config.num_hidden_layers)],
                       [torch.rand(config.num_attention_heads, generator=generator) for _ in range(config.num_hidden_layers)],
                       torch.rand(config.hidden_size, generator=generator))


def _kept(scores, config, intermediate, kv_heads, hidden):
    group = config.num_attention_heads // config.num_key_value_heads
    neurons = [sorted(torch.argsort(s, descending=True)[:intermediate].tolist()) for s in scores.neurons]
    heads = []
    for s in scores.heads:
        groups = torch.argsort(s.reshape(-1, group).sum(-1), descending=True)[:kv_heads].tolist()
        heads.append(sorted(g * group + i for g in groups for i in range(group)))
    channels = sorted(torch.argsort(scores.channels, descending=True)[:hidden].tolist())
    return neurons, heads, channels


@pytest.mark.parametrize("make", [
    lambda: LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, layers=2, hidden=32, heads=4, kv_heads=2)),
    lambda: Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
], ids=["llama", "qwen2-tied-with-qkv-bias"])
def test_a_width_pruned_model_reloads_and_equals_the_masked_unpruned_model(make, tmp_path):
    torch.manual_seed(0)
    model = make().eval()
    scores = _scores(model)
    pruned = prune_width(model, scores, intermediate_size=20, num_key_value_heads=1, hidden_size=24).eval()
    config = pruned.config
    assert (config.intermediate_size, config.num_key_value_heads, config.num_attention_heads, config.hidden_size) == (20, 1, 2, 24)
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    neurons, heads, channels = _kept(scores, model.config, 20, 1, 24)
    masked = _masked_copy(model, neurons, heads, channels)
    batch = _batches()[0]
    with torch.no_grad():
        expected = masked(**batch).logits
        got = reloaded(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    # The pruned weights are the original ones on the kept rows and columns.
    torch.testing.assert_close(reloaded.model.layers[1].mlp.up_proj.weight,
                               model.model.layers[1].mlp.up_proj.weight[neurons[1]][:, channels])


def test_width_scores_are_the_mean_activation_magnitudes_over_real_tokens():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, layers=2, hidden=32, heads=4, kv_heads=2)).eval()
    batches = _batches()
    mask = batches[0]["attention_mask"].bool()
    captured = {}
    block = model.model.layers[1]
    hooks = [block.mlp.down_proj.register_forward_pre_hook(lambda m, a: captured.__setitem__("down", a[0])),
             block.self_attn.o_proj.register_forward_pre_hook(lambda m, a: captured.__setitem__("o", a[0])),
             model.model.norm.register_forward_hook(lambda m, a, o: captured.__setitem__("final", o))]
    with torch.no_grad():
        model(**batches[0])
    for hook in hooks:
        hook.remove()
    scores = width_scores(model, batches)
    tokens = int(mask.sum())
    torch.testing.assert_close(scores.neurons[1], captured["down"][mask].abs().double().sum(0) / tokens)
    per_head = captured["o"][mask].reshape(tokens, 4, 8).double().norm(dim=-1).sum(0) / tokens
    torch.testing.assert_close(scores.heads[1], per_head)
    # Channels: every RMSNorm output counts; the final norm's share alone is a lower bound on each channel.
    assert torch.all(scores.channels >= captured["final"][mask].abs().double().sum(0) / tokens - 1e-12)


def test_width_pruning_refuses_models_it_does_not_know():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(UserError, match="Llama-family"):
        width_scores(model, [])


def test_a_width_larger_than_the_model_is_a_user_error():
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=VOCAB, layers=1, hidden=32))
    with pytest.raises(UserError, match="intermediate_size=999"):
        prune_width(model, _scores(model), intermediate_size=999)
