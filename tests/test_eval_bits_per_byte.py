"""Bits per byte across tokenizers against a hand computation (real GPT-2 and Llama SentencePiece tokenizers)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lmdistill.eval.bits_per_byte import scored_examples, text_bits_per_byte

TEXT = "héllo 日本 😀"  # 6 + 1 + 6 + 1 + 4 = 18 UTF-8 bytes


def tiny(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)).eval()


@pytest.mark.parametrize("name", ["gpt2_tokenizer", "spm_tokenizer"])
def test_bits_per_byte_by_hand(request, name):
    tokenizer = request.getfixturevalue(name)
    model = tiny(len(tokenizer))
    # GPT-2 adds no BOS: its EOS goes in front so the first text token is predicted too; SentencePiece adds <s>.
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = [start] + [i for i in tokenizer(TEXT)["input_ids"] if i != start]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].float(), -1)
    nll = -sum(float(log_probs[t, ids[t + 1]]) for t in range(len(ids) - 1))
    result = text_bits_per_byte(model, tokenizer, [TEXT])
    assert result["num_bytes"] == 18
    assert result["nll_sum"] == pytest.approx(nll, rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(nll / (math.log(2) * 18), rel=1e-5)


def test_truncated_texts_count_only_scored_bytes(gpt2_tokenizer):
    examples, num_bytes = scored_examples(gpt2_tokenizer, ["Hello world, again"], max_length=3)  # <eos> Hello ' world'
    assert examples[0]["input_ids"][1:] == gpt2_tokenizer("Hello world")["input_ids"]
    assert num_bytes == len("Hello world")


def test_lmdistill_eval_gives_bits_per_byte_with_each_models_own_tokenizer(tmp_path, gpt2_tokenizer, spm_tokenizer):
    import json

    from lmdistill.cli import main

    texts = ["Once upon a time there was a fox.", "héllo 日本 😀, said Tom."]
    (tmp_path / "held_out.jsonl").write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts), encoding="utf-8")
    for name, tokenizer in (("student", gpt2_tokenizer), ("teacher", spm_tokenizer)):
        tiny(len(tokenizer)).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    code = main(["eval", "--model", f"student={tmp_path / 'student'}", "--teacher", str(tmp_path / "teacher"),
                 "--data", str(tmp_path / "held_out.jsonl"), "--output", str(tmp_path / "eval.json")])
    assert code == 0
    models = json.loads((tmp_path / "eval.json").read_text())["models"]
    for name, tokenizer in (("student", gpt2_tokenizer), ("teacher", spm_tokenizer)):
        model = LlamaForCausalLM.from_pretrained(tmp_path / name).eval()
        assert models[name]["bits_per_byte"] == pytest.approx(text_bits_per_byte(model, tokenizer, texts)["bits_per_byte"], rel=1e-6)
    assert "top1_agreement" not in models["student"]  # another vocabulary: no token-by-token agreement
