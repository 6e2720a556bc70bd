"""Teacher-signal cache: stored values against the live teacher, validation, damaged shards, resume, quantisation.

A character-level tokenizer (98 tokens) keeps k = V caches tiny.
"""

from __future__ import annotations

import math
import shutil
import string

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import require_shared_data, tiny_run_config
from lmdistill.cache import TeacherCache, build_teacher_cache
from lmdistill.config import parse_config
from lmdistill.errors import UserError
from lmdistill.models.loading import load_tokenizer
from lmdistill.tasks import get_task
from lmdistill.models.build import load_teacher

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 98


@pytest.fixture(scope="session")
def char_tokenizer_dir(tmp_path_factory):
    """Printable ASCII + newline + <unk> + <eos>, one token per character."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(list(string.printable[:95]) + ["\n", "<unk>", "<eos>"])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    out = tmp_path_factory.mktemp("char-tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<eos>").save_pretrained(out)
    return out


def char_run_config(output_dir, tokenizer_dir, **sections) -> dict:
    """The tiny run config on the char tokenizer: teacher vocab 98, a fresh 2-layer student, 24 examples of 24 tokens."""
    config = tiny_run_config(output_dir, tokenizer_dir, **sections)
    config["teacher"]["config"]["vocab_size"] = VOCAB
    config["data"].update(max_length=24, max_examples=6)
    if "student" not in sections:
        config["student"] = {"config": {**config["teacher"]["config"], "num_hidden_layers": 2}}
    return config


def _build(tmp_path, tokenizer_dir, name, top_k, **options):
    config = parse_config(char_run_config(tmp_path / "run", tokenizer_dir))
    return config, build_teacher_cache(config, tmp_path / name, top_k, **options)


def _live(config, indices):
    """Live teacher log-softmax (B, S, V) in float64 for examples collated like the engine does."""
    tokenizer = load_tokenizer(config.tokenizer)
    examples, _ = get_task("causal_lm").load_datasets(config.data, tokenizer, config.seed)
    teacher = load_teacher(config.teachers[0], model_class=get_task("causal_lm").model_class, seed=config.seed)
    batch = get_task("causal_lm").collate([examples[i] for i in indices], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.log_softmax(logits.double(), -1), batch["attention_mask"].bool(), examples, tokenizer


def test_full_cache_holds_the_teachers_exact_distribution_at_every_real_position(tmp_path, char_tokenizer_dir):
    config, path = _build(tmp_path, char_tokenizer_dir, "full", VOCAB, examples_per_shard=7)
    live, real, examples, tokenizer = _live(config, [0, 9, 23])
    cache = TeacherCache(path)
    cache.validate(tokenizer, examples)
    sparse = cache.teacher_batch([0, 9, 23], live.shape[1])
    rebuilt = torch.full_like(live, -math.inf).scatter(-1, sparse.token_ids.long(), sparse.log_probs.double())
    torch.testing.assert_close(rebuilt[real], live[real], rtol=0, atol=2e-5)
    assert (sparse.tail_log_mass == -math.inf).all()
    assert len(cache.manifest["shards"]) == math.ceil(len(examples) / 7) and cache.num_examples == len(examples)


def test_top_k_cache_keeps_the_largest_tokens_and_the_rest_as_tail_mass(tmp_path, char_tokenizer_dir):
    config, path = _build(tmp_path, char_tokenizer_dir, "top5", 5)
    live, real, _, _ = _live(config, [3, 4])
    sparse = TeacherCache(path).teacher_batch([3, 4], live.shape[1] + 2)  # 2 extra positions of padding
    top_values, _ = live.topk(5, dim=-1)
    torch.testing.assert_close(sparse.log_probs[:, :-2][real].double(), top_values[real], rtol=0, atol=2e-5)
    torch.testing.assert_close(live.gather(-1, sparse.token_ids[:, :-2].long())[real], top_values[real], rtol=0, atol=2e-5)
    expected_tail = torch.log1p(-top_values.exp().sum(-1))
    torch.testing.assert_close(sparse.tail_log_mass[:, :-2][real].double(), expected_tail[real], rtol=0, atol=2e-5)
    assert sparse.token_ids[:, -1].tolist() == [[0, 1, 2, 3, 4]] * 2 and (sparse.tail_log_mass[:, -1] == -math.inf).all()


def test_another_tokenizer_or_other_data_is_refused(tmp_path, char_tokenizer_dir):
    config, path = _build(tmp_path, char_tokenizer_dir, "cache", 4)
    cache = TeacherCache(path)
    _, _, examples, tokenizer = _live(config, [0])
    other_tokenizer = load_tokenizer(str(char_tokenizer_dir))
    other_tokenizer.add_tokens(["<extra>"])
    with pytest.raises(UserError, match="tokenizer.*98 tokens.*99 tokens.*lmdistill cache"):
        cache.validate(other_tokenizer, examples)
    other = parse_config(char_run_config(tmp_path / "run", char_tokenizer_dir, seed=0))
    other.data.max_length = 20
    fewer, _ = get_task("causal_lm").load_datasets(other.data, tokenizer, 0)
    with pytest.raises(UserError, match=f"training examples are not the {len(examples)}"):
        cache.validate(tokenizer, fewer)


def test_a_changed_data_file_is_refused(tmp_path, char_tokenizer_dir):
    data = tmp_path / "stories.txt"
    shutil.copy(require_shared_data("tinystories", "tinystories_val_head.txt"), data)
    raw = char_run_config(tmp_path / "run", char_tokenizer_dir)
    raw["data"]["train"] = str(data)
    config = parse_config(raw)
    path = build_teacher_cache(config, tmp_path / "cache", 4)
    _, _, examples, tokenizer = _live(config, [0])
    data.write_text(data.read_text() + "\n\nOne more story.\n")
    with pytest.raises(UserError, match="stories.txt changed"):
        TeacherCache(path).validate(tokenizer, examples)


@pytest.mark.parametrize("damage,message", [("truncate", "truncated"), ("flip", "corrupted")])
def test_a_damaged_shard_is_named_with_the_fix_and_a_rerun_repairs_it(tmp_path, char_tokenizer_dir, damage, message):
    config, path = _build(tmp_path, char_tokenizer_dir, "cache", 4, examples_per_shard=10)
    shard = path / "shard-00001.safetensors"
    original = shard.read_bytes()
    damaged = original[: len(original) // 2] if damage == "truncate" else original[:-9] + bytes([original[-9] ^ 1]) + original[-8:]
    shard.write_bytes(damaged)
    cache = TeacherCache(path)
    cache.teacher_batch([0, 9], 24)  # shard 0 is intact
    with pytest.raises(UserError, match=f"shard-00001.safetensors is {message}.*lmdistill cache"):
        cache.teacher_batch([10], 24)
    build_teacher_cache(config, path, 4, examples_per_shard=10)
    assert shard.read_bytes() == original


def test_an_interrupted_cache_run_resumes_to_the_same_cache(tmp_path, char_tokenizer_dir):
    config, straight = _build(tmp_path, char_tokenizer_dir, "straight", 6, examples_per_shard=10)
    resumed = tmp_path / "resumed"
    build_teacher_cache(config, resumed, 6, examples_per_shard=10, max_new_shards=1)
    assert sorted(p.name for p in resumed.glob("shard-*")) == ["shard-00000.safetensors"]
    with pytest.raises(UserError, match="incomplete.*resumes"):
        TeacherCache(resumed)
    (resumed / ".shard-00001.safetensors.999.tmp").write_bytes(b"half a shard from a killed run")
    first_shard = (resumed / "shard-00000.safetensors").stat().st_mtime_ns
    build_teacher_cache(config, resumed, 6, examples_per_shard=10)
    assert (resumed / "shard-00000.safetensors").stat().st_mtime_ns == first_shard  # skipped, not rewritten
    for name in ("shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors", "index.safetensors"):
        assert (resumed / name).read_bytes() == (straight / name).read_bytes(), name
    with pytest.raises(UserError, match="built differently \\(top_k"):
        build_teacher_cache(config, resumed, 7, examples_per_shard=10)


@pytest.mark.parametrize("quantize", ["float16", "uint8"])
def test_quantised_values_stay_within_the_documented_error(tmp_path, char_tokenizer_dir, quantize):
    _, exact_path = _build(tmp_path, char_tokenizer_dir, "exact", 16)
    _, small_path = _build(tmp_path, char_tokenizer_dir, quantize, 16, quantize=quantize)
    indices = list(range(24))
    exact = TeacherCache(exact_path).teacher_batch(indices, 24)
    small = TeacherCache(small_path).teacher_batch(indices, 24)
    assert torch.equal(exact.token_ids, small.token_ids) and torch.equal(exact.tail_log_mass, small.tail_log_mass)
    error = (small.log_probs - exact.log_probs).abs()
    if quantize == "float16":
        assert (error <= exact.log_probs.abs() * 2.0**-11 + 1e-7).all()
    else:
        top, low = exact.log_probs[..., :1], exact.log_probs[..., -1:].clamp(min=exact.log_probs[..., :1] - 40)
        assert (error <= (top - low) / 510 + 1e-6).all() and error.max() > 0
    stored = sum(p.stat().st_size for p in small_path.glob("shard-*"))
    assert stored < 0.8 * sum(p.stat().st_size for p in exact_path.glob("shard-*"))


def test_cli_cache_command_writes_a_cache(tmp_path, char_tokenizer_dir):
    from lmdistill.cli import main

    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(char_run_config(tmp_path / "run", char_tokenizer_dir)))
    assert main(["cache", "--config", str(config_file), "--top-k", "3", "data.max_examples=2"]) == 0
    path = tmp_path / "run" / "teacher-cache"
    assert TeacherCache(path).top_k == 3 and TeacherCache(path).manifest["data"]["config"]["max_examples"] == 2
    index = load_file(str(path / "index.safetensors"))
    assert index["length"].sum().item() == TeacherCache(path).manifest["shards"][0]["positions"]
    assert main(["cache", "--config", str(config_file), "--top-k", "999"]) == 2
