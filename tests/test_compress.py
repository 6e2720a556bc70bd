"""`lmdistill compress`: the pruning plan reaches its target, and the whole job runs end to end on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoTokenizer, LlamaForCausalLM

from conftest import require_shared_data, tiny_llama_config
from lmdistill.cache.reader import TeacherCache
from lmdistill.cli import main
from lmdistill.commands.compress import parse_count
from lmdistill.compress import CompressSettings, count_parameters, plan_pruning
from lmdistill.config import DataConfig
from lmdistill.data.causal import load_causal_datasets
from lmdistill.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(**target):
    return CompressSettings(teacher="t", train="d", eval="e", **target)


def test_count_parameters_equals_a_built_model():
    config = tiny_llama_config(vocab_size=101, layers=3)
    assert count_parameters(config) == sum(p.numel() for p in LlamaForCausalLM(config).parameters())


def test_a_ratio_keeps_the_layers_that_reach_it():
    config = tiny_llama_config(vocab_size=101, layers=10, hidden=32)
    total = count_parameters(config)
    per_layer = (total - count_parameters(tiny_llama_config(vocab_size=101, layers=9, hidden=32)))
    fixed = total - 10 * per_layer
    plan = plan_pruning(config, _settings(ratio=0.5))
    assert plan["count"] == round(10 * (0.5 * total - fixed) / (total - fixed))
    assert plan["by"] == "importance" and "width" not in plan


def test_a_width_plan_narrows_every_layer_by_one_factor():
    config = tiny_llama_config(vocab_size=101, layers=4, hidden=32, heads=4, kv_heads=2)  # intermediate 64
    plan = plan_pruning(config, _settings(params=count_parameters(config) * 0.75, prune="width"))
    assert plan["count"] == 4
    total = count_parameters(config)
    fixed = count_parameters(tiny_llama_config(vocab_size=101, layers=0, hidden=32))
    share = (0.75 * total - fixed) / (total - fixed)
    assert plan["width"] == {"intermediate_size": round(64 * share / 8) * 8, "num_key_value_heads": round(2 * share)}


@pytest.mark.parametrize("target,message", [({}, "give one target"), ({"layers": 2, "ratio": 0.5}, "give one target"),
                                            ({"ratio": 1.5}, "between 0 and 1"), ({"layers": 2, "prune": "width"}, "depth target")])
def test_bad_targets_are_one_line_errors(target, message):
    with pytest.raises(UserError, match=message):
        _settings(**target)


def test_a_target_below_the_embeddings_or_above_the_teacher_is_refused():
    config = tiny_llama_config(vocab_size=101, layers=4)
    with pytest.raises(UserError, match="below the teacher's embeddings"):
        plan_pruning(config, _settings(params=100))
    with pytest.raises(UserError, match="not below the teacher's"):
        plan_pruning(config, _settings(params=count_parameters(config) + 1))


@pytest.mark.parametrize("text,count", [("60M", 60e6), ("1.5B", 1.5e9), ("800k", 8e5), ("1234", 1234.0)])
def test_parameter_counts_read_like_people_write_them(text, count):
    assert parse_count(text) == count


@pytest.fixture
def tiny_teacher(tmp_path, gpt2_tokenizer_dir):
    """A tiny random 4-layer Llama with the real GPT-2 tokenizer, and prompt/completion data from TinyStories."""
    stories = require_shared_data("tinystories", "tinystories_val_head.txt").read_text().split("\n\n")
    tokenizer = AutoTokenizer.from_pretrained(gpt2_tokenizer_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(vocab_size=len(tokenizer), layers=4)).save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    rows = [{"prompt": " ".join(s.split()[:8]), "completion": " " + " ".join(s.split()[8:24])} for s in stories if len(s.split()) > 24]
    for name, part in (("train", rows[:16]), ("heldout", rows[16:20])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return tmp_path


def test_compress_runs_end_to_end_from_the_cli(tiny_teacher, capsys):
    out = tiny_teacher / "out"
    code = main(["compress", "--teacher", str(tiny_teacher / "teacher"), "--data", str(tiny_teacher / "train.jsonl"),
                 "--eval-data", str(tiny_teacher / "heldout.jsonl"), "--format", "prompt_completion", "--layers", "2",
                 "--steps", "2", "--batch-size", "4", "--calibration-examples", "8", "--precision", "bf16",
                 "--freeze-embeddings", "--output-dir", str(out)])
    assert code == 0
    evaluation = json.loads((out / "distilled" / "evaluation.json").read_text())
    assert set(evaluation["models"]) == {"teacher", "student", "baseline"}
    assert evaluation["models"]["student"]["layers"] == 2 and evaluation["pruning"]["kept_layers"] == [0, 3]
    # The baseline starts from the same pruned student: the same layers were chosen for it.
    assert json.loads((out / "baseline" / "pruning.json").read_text())["kept_layers"] == [0, 3]
    baseline_config = (out / "baseline" / "config.yaml").read_text()
    assert "name: ce" in baseline_config and "forward_kl" not in baseline_config
    # Both runs train in the precision asked for, with the embeddings frozen as asked.
    configs = [yaml.safe_load((out / run / "config.yaml").read_text()) for run in ("distilled", "baseline")]
    assert all(c["train"]["precision"] == "bf16" and c["student"]["freeze_embeddings"] is True for c in configs)
    samples = evaluation["samples"]
    assert len(samples) == 4 and samples[0]["prompt"] and {"teacher", "student", "baseline"} <= set(samples[0])
    report = (out / "distilled" / "report" / "report.md").read_text()
    assert "Answers side by side" in report and "Pruning" in report
    printed = capsys.readouterr().out
    assert "6/6 report" in printed and "report.html" in printed


def test_compress_with_width_pruning_gives_a_narrower_student(tiny_teacher):
    out = tiny_teacher / "out"
    teacher = LlamaForCausalLM.from_pretrained(tiny_teacher / "teacher")
    total = count_parameters(teacher.config)
    embeddings_and_head = count_parameters(tiny_llama_config(vocab_size=teacher.config.vocab_size, layers=0))
    target = embeddings_and_head + 0.6 * (total - embeddings_and_head)  # 60 % of the blocks' parameters
    assert main(["compress", "--teacher", str(tiny_teacher / "teacher"), "--data", str(tiny_teacher / "train.jsonl"),
                 "--eval-data", str(tiny_teacher / "heldout.jsonl"), "--format", "prompt_completion", "--params", str(int(target)),
                 "--prune", "width", "--steps", "1", "--batch-size", "4", "--output-dir", str(out)]) == 0
    student = LlamaForCausalLM.from_pretrained(out / "distilled" / "student")
    assert student.config.num_hidden_layers == 4 and student.config.intermediate_size < teacher.config.intermediate_size


def test_the_distilled_run_reads_a_top_k_cache_of_the_teacher_and_the_baseline_the_live_teacher(tiny_teacher):
    out = tiny_teacher / "out"
    assert main(["compress", "--teacher", str(tiny_teacher / "teacher"), "--data", str(tiny_teacher / "train.jsonl"),
                 "--eval-data", str(tiny_teacher / "heldout.jsonl"), "--format", "prompt_completion", "--layers", "2",
                 "--steps", "1", "--batch-size", "4", "--cache-top-k", "5", "--output-dir", str(out)]) == 0
    distilled = yaml.safe_load((out / "distilled" / "config.yaml").read_text())
    baseline = yaml.safe_load((out / "baseline" / "config.yaml").read_text())
    assert distilled["teacher"]["cache"] == str(out / "teacher-cache") and "path" not in distilled["teacher"]
    assert baseline["teacher"]["path"] == str(tiny_teacher / "teacher") and "cache" not in baseline["teacher"]
    # The cache holds the teacher's own top-5 log-probs (T = 1) at every position of the first training example.
    cache = TeacherCache(out / "teacher-cache")
    assert cache.top_k == 5 and cache.manifest["teacher"]["path"] == str(tiny_teacher / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher / "teacher")
    data = DataConfig(train=str(tiny_teacher / "train.jsonl"), format="prompt_completion", max_length=256)
    ids = load_causal_datasets(data, tokenizer, seed=0)[0][0]["input_ids"]
    teacher = LlamaForCausalLM.from_pretrained(tiny_teacher / "teacher").eval()
    with torch.no_grad():
        expected = torch.log_softmax(teacher(torch.tensor([ids])).logits[0].double(), dim=-1).topk(5, dim=-1)
    stored = cache.example(0)
    assert stored.token_ids.shape[0] == len(ids)
    torch.testing.assert_close(stored.log_probs.double(), expected.values, atol=1e-4, rtol=0)


def test_live_teacher_distils_without_a_cache(tiny_teacher):
    out = tiny_teacher / "out"
    assert main(["compress", "--teacher", str(tiny_teacher / "teacher"), "--data", str(tiny_teacher / "train.jsonl"),
                 "--eval-data", str(tiny_teacher / "heldout.jsonl"), "--format", "prompt_completion", "--layers", "2",
                 "--steps", "1", "--batch-size", "4", "--live-teacher", "--output-dir", str(out)]) == 0
    assert yaml.safe_load((out / "distilled" / "config.yaml").read_text())["teacher"]["path"] == str(tiny_teacher / "teacher")
    assert not (out / "teacher-cache").exists()


def test_a_cache_of_no_tokens_is_refused():
    with pytest.raises(UserError, match="--cache-top-k 0 must be at least 1"):
        _settings(layers=2, cache_top_k=0)
