"""Teacher pseudo data: rows against an unbatched step-by-step reference, seeding, resume, torn lines, stops, chat."""

from __future__ import annotations

import copy
import importlib
import json

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from lmdistill.config import DataConfig
from lmdistill.data.causal import build_causal_examples
from lmdistill.data.generate import generate_pseudo_data
from lmdistill.data.generate_config import parse_generate_config
from lmdistill.data.sampling import row_seed
from lmdistill.errors import UserError
from lmdistill.models.loading import model_from_config

pytestmark = pytest.mark.usefixtures("one_thread")

EOS = 50256
TEACHER = {
    "model_type": "llama", "vocab_size": 50257, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256, "tie_word_embeddings": False,
    "eos_token_id": EOS, "bos_token_id": EOS,
}
PROMPTS = ["Once upon a time", "The cat sat on the mat and looked", "Hi", "A long time ago in a galaxy far away there was", "Tom said"]
SIMPLE_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture()
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": text, "id": f"p{i}"}) + "\n" for i, text in enumerate(PROMPTS)))
    return path


@pytest.fixture()
def make(tmp_path, gpt2_tokenizer_dir, prompts_file):
    """make(name, **sections) -> GenerateConfig writing tmp_path/name.jsonl; sections are merged into the defaults."""

    def build(name: str, **sections):
        raw = {
            "teacher": {"config": TEACHER}, "tokenizer": str(gpt2_tokenizer_dir),
            "prompts": {"source": str(prompts_file), "keep_fields": ["id"]},
            "sampling": {"num_samples": 2, "batch_size": 3, "max_new_tokens": 6, "temperature": 1.0},
            "output": str(tmp_path / f"{name}.jsonl"), "device": "cpu",
        }
        for key, value in sections.items():
            raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
        return parse_generate_config(raw)

    return build


@pytest.fixture(scope="module")
def teacher():
    return model_from_config(TEACHER, seed=0).eval()


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def reference_ids(model, tokenizer, prompt, seed, prompt_index, sample_index, *, temperature, max_new_tokens, top_k=0, top_p=1.0, eos=(EOS,)):
    """One row, no batch and no padding: full forward per step, Hugging Face's own warpers, inverse-CDF draw."""
    generator = torch.Generator().manual_seed(row_seed(seed, prompt_index, sample_index))
    ids, out = tokenizer(prompt)["input_ids"], []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            scores = model(torch.tensor([ids + out])).logits[:, -1].float()
            if temperature == 0:
                token = int(scores[0].argmax())
            else:
                for warper in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k) if top_k else None, TopPLogitsWarper(top_p)):
                    scores = warper(None, scores) if warper is not None else scores
                cumulative = scores[0].softmax(-1).double().cumsum(-1)
                u = float(torch.rand(1, generator=generator, dtype=torch.float64))
                token = int((cumulative <= u * float(cumulative[-1])).sum())
            out.append(token)
            if token in eos:
                break
    return out


def decode(tokenizer, ids):
    return tokenizer.decode([t for t in ids if t != EOS], skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_greedy_rows_match_unbatched_reference_with_provenance(make, teacher, gpt2_tokenizer):
    config = make("greedy", sampling={"temperature": 0.0, "num_samples": 1})
    result = generate_pseudo_data(config)
    rows = rows_of(result.output)
    assert (result.written, result.filtered, result.skipped_existing, result.total_rows) == (5, 0, 0, 5)
    sampling = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 6, "seed": 0, "stop": []}
    for index, (row, prompt) in enumerate(zip(rows, PROMPTS)):
        expected = reference_ids(teacher, gpt2_tokenizer, prompt, 0, index, 0, temperature=0, max_new_tokens=6)
        assert row == {
            "prompt": prompt, "completion": decode(gpt2_tokenizer, expected), "prompt_index": index, "sample_index": 0,
            "teacher": "random llama (config)", "sampling": sampling, "finish_reason": "eos" if expected[-1] == EOS else "length",
            "id": f"p{index}",
        }
    # directly usable as prompt_completion training data: completion tokens (+ EOS) are exactly the loss tokens
    examples = build_causal_examples(rows, gpt2_tokenizer, DataConfig(train="x", format="prompt_completion", max_length=64))
    for example, row in zip(examples, rows):
        assert [t for t in example["labels"] if t != -100] == gpt2_tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [EOS]


def test_sampled_rows_match_per_row_reference_whatever_the_batch(make, teacher, gpt2_tokenizer):
    sampling = {"temperature": 0.8, "top_k": 50, "top_p": 0.9, "seed": 3}
    rows = rows_of(generate_pseudo_data(make("sampled", sampling=sampling)).output)
    assert [(r["prompt_index"], r["sample_index"]) for r in rows] == [(p, s) for p in range(5) for s in range(2)]
    for row in rows:
        expected = reference_ids(teacher, gpt2_tokenizer, PROMPTS[row["prompt_index"]], 3, row["prompt_index"], row["sample_index"],
                                 temperature=0.8, top_k=50, top_p=0.9, max_new_tokens=6)
        assert row["completion"] == decode(gpt2_tokenizer, expected)
    assert all(rows[2 * p]["completion"] != rows[2 * p + 1]["completion"] for p in range(5))
    # same seed, other batch size: byte-identical file (batch_size is not recorded in the rows)
    other_batch = generate_pseudo_data(make("sampled-b5", sampling={**sampling, "batch_size": 5})).output
    assert other_batch.read_bytes() == (other_batch.parent / "sampled.jsonl").read_bytes()
    other_seed = rows_of(generate_pseudo_data(make("sampled-seed4", sampling={**sampling, "seed": 4})).output)
    assert sum(a["completion"] != b["completion"] for a, b in zip(other_seed, rows)) == 10


def test_resume_after_a_crash_in_the_second_batch(make, tmp_path, monkeypatch):
    (tmp_path / "crash_filter_mod.py").write_text(
        "STATE = {'calls': 0, 'fail_after': None}\n"
        "def keep(row):\n"
        "    STATE['calls'] += 1\n"
        "    if STATE['fail_after'] is not None and STATE['calls'] > STATE['fail_after']:\n"
        "        raise RuntimeError('simulated crash')\n"
        "    return True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    state = importlib.import_module("crash_filter_mod").STATE
    filters = {"callable": "crash_filter_mod:keep"}
    reference = rows_of(generate_pseudo_data(make("uninterrupted", filters=filters)).output)
    state["fail_after"], state["calls"] = 4, 0
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_pseudo_data(make("resumed", filters=filters))
    assert len(rows_of(tmp_path / "resumed.jsonl")) == 3  # the first batch only
    state["fail_after"] = None
    result = generate_pseudo_data(make("resumed", filters=filters))
    assert (result.written, result.skipped_existing, result.total_rows) == (7, 3, 10)
    assert rows_of(tmp_path / "resumed.jsonl") == reference
    again = generate_pseudo_data(make("resumed", filters=filters))
    assert (again.written, again.skipped_existing) == (0, 10)
    assert rows_of(tmp_path / "resumed.jsonl") == reference


def test_more_prompts_extend_a_finished_run(make, tmp_path):
    reference = rows_of(generate_pseudo_data(make("full")).output)
    first = generate_pseudo_data(make("grown", prompts={"max_examples": 3}))  # 6 pairs: two whole batches of 3
    assert first.total_rows == 6
    result = generate_pseudo_data(make("grown"))
    assert (result.written, result.skipped_existing) == (4, 6)
    assert rows_of(tmp_path / "grown.jsonl") == reference


def test_torn_last_line_is_dropped_and_regenerated(make, tmp_path):
    output = generate_pseudo_data(make("torn")).output
    complete = output.read_bytes()
    output.write_bytes(complete[:-15])
    result = generate_pseudo_data(make("torn"))
    assert (result.written, result.skipped_existing) == (1, 9)
    assert output.read_bytes() == complete
    lines = complete.decode().splitlines()
    output.write_text("\n".join(lines[:3] + ["{not json"] + lines[4:]) + "\n")
    with pytest.raises(UserError, match=r"torn\.jsonl:4: malformed JSON line inside the output"):
        generate_pseudo_data(make("torn"))


def test_changed_config_refuses_to_resume(make, tmp_path):
    output = generate_pseudo_data(make("pinned", prompts={"max_examples": 2})).output
    before = output.read_bytes()
    with pytest.raises(UserError, match=r"different config \(changed: sampling\.temperature\); write to a new output file"):
        generate_pseudo_data(make("pinned", sampling={"temperature": 0.5}))
    assert output.read_bytes() == before
    # another output in the same folder keeps its own manifest entry
    generate_pseudo_data(make("pinned-other", sampling={"temperature": 0.5}, prompts={"max_examples": 1}))
    manifest = json.loads((tmp_path / "generation_manifest.json").read_text())
    assert sorted(manifest["outputs"]) == ["pinned-other.jsonl", "pinned.jsonl"]
    assert generate_pseudo_data(make("pinned")).written == 6


def test_stop_strings_cut_before_the_earliest_stop(make):
    base = rows_of(generate_pseudo_data(make("nostop")).output)
    first, second = base[0]["completion"][3:5], base[5]["completion"][2:4]
    rows = rows_of(generate_pseudo_data(make("stopped", sampling={"stop": [first, second]})).output)
    cut_count = 0
    for row, original in zip(rows, base):
        cuts = [i for i in (original["completion"].find(first), original["completion"].find(second)) if i >= 0]
        expected = original["completion"][: min(cuts)] if cuts else original["completion"]
        assert row["completion"] == expected
        assert row["finish_reason"] == ("stop" if cuts else original["finish_reason"])
        cut_count += bool(cuts)
    assert rows[0]["completion"] == base[0]["completion"][:3] and cut_count >= 2


def test_eos_from_the_teacher_generation_config_ends_the_completion(make, teacher, gpt2_tokenizer, tmp_path):
    expected = [reference_ids(teacher, gpt2_tokenizer, p, 0, i, 0, temperature=0, max_new_tokens=6) for i, p in enumerate(PROMPTS)]
    stop_token = expected[0][2]
    config = make("eos", teacher={"config": {**TEACHER, "eos_token_id": stop_token}}, sampling={"temperature": 0.0, "num_samples": 1})
    rows = rows_of(generate_pseudo_data(config).output)
    for row, ids in zip(rows, expected):
        ended = stop_token in ids
        kept = ids[: ids.index(stop_token)] if ended else ids
        assert (row["completion"], row["finish_reason"]) == (decode(gpt2_tokenizer, kept), "eos" if ended else "length")
    assert rows[0]["finish_reason"] == "eos"


def test_filters_length_regex_callable(make, gpt2_tokenizer, tmp_path, monkeypatch):
    base = rows_of(generate_pseudo_data(make("unfiltered", sampling={"max_new_tokens": 8})).output)
    lengths = {(r["prompt_index"], r["sample_index"]): len(gpt2_tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) for r in base}
    low, high = sorted(lengths.values())[2], sorted(lengths.values())[7]
    by_length = make("by-length", sampling={"max_new_tokens": 8}, filters={"min_completion_tokens": low, "max_completion_tokens": high})
    result = generate_pseudo_data(by_length)
    kept = {(r["prompt_index"], r["sample_index"]) for r in rows_of(result.output)}
    assert kept == {pair for pair, n in lengths.items() if low <= n <= high} and 0 < len(kept) < 10
    assert result.filtered == 10 - len(kept)
    markers = rows_of(result.output.with_name("by-length.jsonl.filtered"))
    assert all(m["filtered"] is True and "tokens" in m["reason"] for m in markers) and len(markers) == 10 - len(kept)
    rerun = generate_pseudo_data(by_length)
    assert (rerun.written, rerun.filtered, rerun.skipped_existing, rerun.total_filtered) == (0, 0, 10, 10 - len(kept))

    pattern = "[aeiou]{2}"
    import re

    result = generate_pseudo_data(make("by-regex", sampling={"max_new_tokens": 8}, filters={"regex": pattern}))
    assert [r["completion"] for r in rows_of(result.output)] == [r["completion"] for r in base if re.search(pattern, r["completion"])]
    assert 0 < result.written < 10

    (tmp_path / "even_filter_mod.py").write_text("def keep(row):\n    return row['prompt_index'] % 2 == 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = generate_pseudo_data(make("by-callable", sampling={"max_new_tokens": 8}, filters={"callable": "even_filter_mod:keep"}))
    assert [r["completion"] for r in rows_of(result.output)] == [r["completion"] for r in base if r["prompt_index"] % 2 == 0]
    with pytest.raises(UserError, match="cannot import module 'no_such_filter_mod'"):
        generate_pseudo_data(make("bad-callable", filters={"callable": "no_such_filter_mod:keep"}))


def test_deduplicate_keeps_the_first_of_identical_samples(make, tmp_path):
    config = make("dedup", sampling={"temperature": 0.0, "num_samples": 3, "batch_size": 4}, filters={"deduplicate": True})
    result = generate_pseudo_data(config)
    assert [(r["prompt_index"], r["sample_index"]) for r in rows_of(result.output)] == [(p, 0) for p in range(5)]
    markers = rows_of(tmp_path / "dedup.jsonl.filtered")
    assert [(m["prompt_index"], m["sample_index"], m["reason"]) for m in markers] == [(p, s, "duplicate") for p in range(5) for s in (1, 2)]
    without = rows_of(generate_pseudo_data(make("nodedup", sampling={"temperature": 0.0, "num_samples": 3, "batch_size": 4})).output)
    assert len(without) == 15


def test_chat_prompts_render_the_template_and_rows_train_as_chat(make, gpt2_tokenizer, tmp_path):
    tokenizer = copy.deepcopy(gpt2_tokenizer)
    tokenizer.chat_template = SIMPLE_TEMPLATE
    tokenizer.save_pretrained(tmp_path / "chat-tokenizer")
    source = tmp_path / "chats.jsonl"
    conversations = [[{"role": "user", "content": text}, {"role": "assistant", "content": "reference"}] for text in PROMPTS[:3]]
    source.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    config = make("chat", tokenizer=str(tmp_path / "chat-tokenizer"), prompts={"source": str(source), "format": "chat", "keep_fields": []},
                  sampling={"num_samples": 1})
    rows = rows_of(generate_pseudo_data(config).output)
    for row, messages in zip(rows, conversations):
        assert row["prompt"] == f"<|user|>{messages[0]['content']}\n<|assistant|>"
        assert row["messages"] == [messages[0], {"role": "assistant", "content": row["completion"]}]
    examples = build_causal_examples(rows, tokenizer, DataConfig(train="x", format="chat", max_length=64))
    for example, row in zip(examples, rows):
        assert tokenizer.decode([t for t in example["labels"] if t != -100]) == row["completion"] + "\n"

    wrapped = make("wrapped", tokenizer=str(tmp_path / "chat-tokenizer"), prompts={"use_chat_template": True, "max_examples": 1})
    row = rows_of(generate_pseudo_data(wrapped).output)[0]
    assert row["prompt"] == f"<|user|>{PROMPTS[0]}\n<|assistant|>" and row["messages"][0] == {"role": "user", "content": PROMPTS[0]}


def test_user_errors(make, tmp_path):
    with pytest.raises(UserError, match="the tokenizer has none"):
        generate_pseudo_data(make("e1", prompts={"use_chat_template": True}))
    with pytest.raises(UserError, match="prompt record 0 has no field 'question'; set prompts.prompt_field"):
        generate_pseudo_data(make("e2", prompts={"prompt_field": "question"}))
    with pytest.raises(UserError, match="prompts.template names field 'dialogue'"):
        generate_pseudo_data(make("e3", prompts={"template": "Summarise: {dialogue}"}))
    with pytest.raises(UserError, match="'prompt' is a key every output row sets itself"):
        generate_pseudo_data(make("e4", prompts={"keep_fields": ["prompt"]}))
    with pytest.raises(UserError, match="backend: vllm needs the vllm package"):
        generate_pseudo_data(make("e5", backend="vllm", teacher={"path": "some/teacher", "config": None}))


def test_cli_generate(make, tmp_path, capsys, gpt2_tokenizer_dir, prompts_file):
    from lmdistill.cli import main

    config = tmp_path / "gen.yaml"
    config.write_text(json.dumps({
        "teacher": {"config": TEACHER}, "tokenizer": str(gpt2_tokenizer_dir), "prompts": {"source": str(prompts_file)},
        "output": str(tmp_path / "cli.jsonl"),
    }))
    assert main(["generate", "--config", str(config), "sampling.max_new_tokens=3", "prompts.max_examples=2"]) == 0
    assert "cli.jsonl: 2 rows written, 0 filtered, 0 already done" in capsys.readouterr().out
    assert len(rows_of(tmp_path / "cli.jsonl")) == 2
    assert main(["generate", "--config", str(config), "sampling.num_samples=0"]) == 2
    assert capsys.readouterr().err == f"error: {config}: sampling.num_samples: Input should be greater than or equal to 1; fix sampling.num_samples in the config or override it\n"


def test_shipped_dialogsum_config_on_real_data_with_a_random_teacher(tmp_path, gpt2_tokenizer_dir):
    from pathlib import Path

    from conftest import require_shared_data
    from lmdistill.data.generate_config import load_generate_config

    source = require_shared_data("dialogsum", "dialogsum.dev.jsonl")
    records = [json.loads(line) for line in source.read_text().splitlines()[:2]]
    shipped = Path(__file__).resolve().parents[1] / "configs" / "generate-dialogsum.yaml"
    config = load_generate_config(shipped, [
        "teacher.path=null", f"teacher.config={json.dumps(TEACHER)}", f"tokenizer={gpt2_tokenizer_dir}", f"prompts.source={source}",
        "prompts.use_chat_template=false", "prompts.max_examples=2", "sampling.max_new_tokens=4", "filters.min_completion_tokens=0",
        f"output={tmp_path / 'dialogsum.jsonl'}", "device=cpu",
    ])
    rows = rows_of(generate_pseudo_data(config).output)
    assert [(r["prompt_index"], r["sample_index"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for row in rows:
        record = records[row["prompt_index"]]
        assert row["prompt"] == f"Summarise this dialogue in one or two sentences.\n\n{record['dialogue']}"
        assert (row["fname"], row["summary"]) == (record["fname"], record["summary"])
