"""Runners over tiny random Llama models and a self-contained byte-level tokenizer, against independent references."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from lmdistill.errors import UserError
from lmdistill.eval.metrics import rouge
from lmdistill.eval.runner import (
    evaluate_causal_lm,
    evaluate_generation,
    generate_greedy,
    measure_latency,
    model_footprint,
)

TEXTS = ["Hello world, this is a test.", "Short one", "A somewhat longer held-out sentence goes here!"]
BYTE_VOCAB = 259  # 256 bytes + <bos> <eos> <pad>


@pytest.fixture(scope="module")
def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer (one token per UTF-8 byte) that prepends <bos>; built offline in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab.update({"<bos>": 256, "<eos>": 257, "<pad>": 258})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 256)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def tiny_llama(vocab_size: int = BYTE_VOCAB, seed: int = 0, tie: bool = False, hidden: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=tie,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    )
    return LlamaForCausalLM(config).eval()


def unpadded_logits(model, tokenizer, text):
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return ids[0], model(input_ids=ids).logits[0].double()


def test_tokenizer_is_byte_level(byte_tokenizer):
    ids = byte_tokenizer("Hi!")["input_ids"]
    assert ids[0] == 256 and len(ids) == 4
    assert byte_tokenizer.decode(ids[1:]) == "Hi!"


def test_perplexity_equals_exp_mean_cross_entropy(byte_tokenizer):
    model = tiny_llama()
    nll_sum, count = 0.0, 0
    for text in TEXTS:
        ids, logits = unpadded_logits(model, byte_tokenizer, text)
        nll_sum += F.cross_entropy(logits[:-1], ids[1:], reduction="sum").item()
        count += len(ids) - 1
    results = evaluate_causal_lm(model, byte_tokenizer, TEXTS, batch_size=2)
    assert results["num_tokens"] == count == sum(len(t) for t in TEXTS)
    assert results["perplexity"] == pytest.approx(math.exp(nll_sum / count), rel=1e-5)
    assert results["nll_per_token"] == pytest.approx(nll_sum / count, rel=1e-5)
    # byte-level ASCII text: the scored bytes are exactly the characters of the texts
    assert results["bits_per_byte"] == pytest.approx(nll_sum / (math.log(2) * count), rel=1e-5)
    assert "top1_agreement" not in results


def test_truncation_limits_scored_tokens(byte_tokenizer):
    model = tiny_llama()
    ids, logits = unpadded_logits(model, byte_tokenizer, TEXTS[0])
    expected = F.cross_entropy(logits[:7], ids[1:8]).item()
    results = evaluate_causal_lm(model, byte_tokenizer, TEXTS[:1], max_length=8)
    assert results["num_tokens"] == 7
    assert results["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)


def test_teacher_agreement_and_kl_over_shared_vocab(byte_tokenizer):
    student = tiny_llama(seed=0)
    teacher = tiny_llama(vocab_size=BYTE_VOCAB + 5, seed=1, hidden=48)
    matches, kl_sum, count = 0, 0.0, 0
    for text in TEXTS:
        _, student_logits = unpadded_logits(student, byte_tokenizer, text)
        _, teacher_logits = unpadded_logits(teacher, byte_tokenizer, text)
        student_logits, teacher_logits = student_logits[:-1], teacher_logits[:-1, :BYTE_VOCAB]
        matches += (student_logits.argmax(-1) == teacher_logits.argmax(-1)).sum().item()
        p_t, log_p_s = teacher_logits.softmax(-1), student_logits.log_softmax(-1)
        kl_sum += (p_t * (p_t.log() - log_p_s)).sum().item()
        count += len(student_logits)
    results = evaluate_causal_lm(student, byte_tokenizer, TEXTS, teacher=teacher, batch_size=3)
    assert results["top1_agreement"] == pytest.approx(matches / count)
    assert results["mean_token_kl"] == pytest.approx(kl_sum / count, rel=1e-4)
    same = evaluate_causal_lm(student, byte_tokenizer, TEXTS, teacher=student)
    assert same["top1_agreement"] == 1.0
    assert same["mean_token_kl"] == pytest.approx(0.0, abs=1e-6)


def test_evaluate_causal_lm_user_errors(byte_tokenizer):
    model = tiny_llama()
    with pytest.raises(UserError, match="no evaluation texts"):
        evaluate_causal_lm(model, byte_tokenizer, [])
    with pytest.raises(UserError, match="at least two tokens"):
        evaluate_causal_lm(model, byte_tokenizer, [""])


def llama_parameter_count(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, tie: bool) -> int:
    head_dim = hidden // heads
    attention = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim
    mlp = 3 * hidden * (2 * hidden)
    per_layer = attention + mlp + 2 * hidden
    return vocab * hidden * (1 if tie else 2) + layers * per_layer + hidden


@pytest.mark.parametrize("tie", [False, True])
def test_model_footprint_counts_tied_weights_once(tie):
    model = tiny_llama(tie=tie)
    footprint = model_footprint(model)
    assert footprint["parameters"] == llama_parameter_count(BYTE_VOCAB, 32, 2, 4, 2, tie)
    # float32 weights plus the safetensors header (8-byte length + a JSON index of a few KB)
    header = footprint["size_on_disk_bytes"] - 4 * footprint["parameters"]
    assert 8 < header < 16_384
    half = model_footprint(tiny_llama(tie=tie).to(torch.bfloat16))
    assert 8 < half["size_on_disk_bytes"] - 2 * footprint["parameters"] < 16_384


def test_measure_latency_reports_consistent_units():
    model = tiny_llama()
    model.train()
    input_ids = torch.randint(0, BYTE_VOCAB, (3, 10))
    result = measure_latency(model, input_ids, warmup=1, repeats=3)
    median_seconds = result["latency_ms_per_example"] * 3 / 1000
    assert result["tokens_per_second"] == pytest.approx(30 / median_seconds)
    assert result["latency_ms_per_example"] > 0
    assert model.training  # mode restored


PROMPTS = ["Once upon a", "The", "Numbers: 1, 2,"]


def test_generate_greedy_batched_left_padding_matches_unbatched(byte_tokenizer):
    model = tiny_llama(seed=3)
    expected = []
    for prompt in PROMPTS:
        ids = torch.tensor([byte_tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=258)
        new = out[0, ids.shape[1] :].tolist()
        new = new[: new.index(257)] if 257 in new else new
        expected.append(byte_tokenizer.decode(new, skip_special_tokens=True).strip())
    assert generate_greedy(model, byte_tokenizer, PROMPTS, max_new_tokens=6, batch_size=3) == expected


def test_evaluate_generation_scores_greedy_outputs(byte_tokenizer):
    model = tiny_llama(seed=3)
    teacher = tiny_llama(seed=4)
    references = ["a time there was", "end", ["1, 2, 3", "3"]]
    predictions = generate_greedy(model, byte_tokenizer, PROMPTS, max_new_tokens=6)
    teacher_outputs = generate_greedy(teacher, byte_tokenizer, PROMPTS, max_new_tokens=6)
    results = evaluate_generation(model, byte_tokenizer, PROMPTS, references, max_new_tokens=6, teacher=teacher)
    expected_rouge = rouge(predictions, references)
    for name in ("rouge1", "rouge2", "rougeL"):
        assert results[name] == pytest.approx(expected_rouge[name])
    assert results["teacher_rougeL_agreement"] == pytest.approx(rouge(predictions, teacher_outputs)["rougeL"])
    assert 0.0 <= results["bleu"] <= 100.0 and 0.0 <= results["chrf"] <= 100.0
    with pytest.raises(UserError, match="3 prompts but 2 references"):
        evaluate_generation(model, byte_tokenizer, PROMPTS, references[:2], max_new_tokens=2)


def test_bits_per_byte_with_real_gpt2_tokenizer(gpt2_tokenizer):
    from conftest import tiny_llama_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=len(gpt2_tokenizer), layers=1)).eval()
    texts = ["First Citizen:\nBefore we proceed any further , hear me speak .", "All:\nSpeak, speak. ñandú €5"]
    nll_sum, scored_bytes = 0.0, 0
    for text in texts:
        ids, logits = unpadded_logits(model, gpt2_tokenizer, text)
        assert gpt2_tokenizer.decode(ids, clean_up_tokenization_spaces=False) == text  # no special tokens added
        nll_sum += F.cross_entropy(logits[:-1], ids[1:], reduction="sum").item()
        # GPT-2 adds no BOS, so the first token is context only and its bytes are not scored
        first_token_bytes = len(gpt2_tokenizer.decode(ids[:1], clean_up_tokenization_spaces=False).encode("utf-8"))
        scored_bytes += len(text.encode("utf-8")) - first_token_bytes
    results = evaluate_causal_lm(model, gpt2_tokenizer, texts)
    assert results["bits_per_byte"] == pytest.approx(nll_sum / (math.log(2) * scored_bytes), rel=1e-5)
