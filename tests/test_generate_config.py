"""Generation config: every shipped configs/generate-*.yaml loads; each mistake is one UserError line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmdistill.data.generate import pinned_settings
from lmdistill.data.generate_config import load_generate_config, parse_generate_config
from lmdistill.errors import UserError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("generate-*.yaml"))


def base() -> dict:
    return {
        "teacher": {"path": "some/teacher"},
        "prompts": {"source": "prompts.jsonl"},
        "output": "out/rows.jsonl",
    }


def test_there_is_a_shipped_config():
    assert [p.name for p in CONFIGS] == ["generate-dialogsum.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    config = load_generate_config(path)
    assert config.output.endswith(".jsonl")
    assert config.sampling.temperature >= 0


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("teacher: {path: t}\nprompts: {source: p.jsonl}\noutput: o.jsonl\n")
    config = load_generate_config(path, ["sampling.num_samples=3", 'sampling.stop=["\\n", "###"]', "filters.deduplicate=true"])
    assert (config.sampling.num_samples, config.sampling.stop, config.filters.deduplicate) == (3, ["\n", "###"], True)
    assert (config.sampling.temperature, config.sampling.batch_size, config.backend, config.prompts.format) == (1.0, 8, "transformers", "prompt")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sampling": {"temprature": 0.5}}, "config: sampling.temprature: unknown key"),
        ({"sampling": {"temperature": -1}}, "config: sampling.temperature: Input should be greater than or equal to 0"),
        ({"sampling": {"num_samples": 0}}, "config: sampling.num_samples: Input should be greater than or equal to 1"),
        ({"sampling": {"stop": ["", "x"]}}, "config: sampling.stop: stop strings must be non-empty"),
        ({"output": "rows.json"}, "config: output: must be a .jsonl file path"),
        ({"teacher": {"cache": "c"}}, "config: teacher: teacher.cache holds no model to sample from"),
        ({"teacher": {"config": {"model_type": "llama"}}}, "config: tokenizer: a teacher built from `config` has no tokenizer; set tokenizer:"),
        ({"teacher": {"path": "t", "config": {}}}, "config: teacher: set exactly one of path, config, cache"),
        ({"filters": {"regex": "(unclosed"}}, "config: filters.regex: not a valid regular expression"),
        ({"filters": {"callable": "no_colon"}}, "config: filters.callable: write it as 'module:function'"),
        ({"filters": {"min_completion_tokens": 9, "max_completion_tokens": 3}}, "config: filters: min_completion_tokens is larger"),
        ({"prompts": {"source": "p", "format": "chat", "template": "{x}"}}, "config: prompts: template applies to format: prompt"),
        ({"prompts": {"source": "p", "format": "messages"}}, "config: prompts.format: Input should be 'prompt' or 'chat'"),
        ({"backend": "vllm", "teacher": {"config": {}}, "tokenizer": "t"}, "config: backend: backend vllm needs teacher.path"),
        ({"backend": "tgi"}, "config: backend: Input should be 'transformers' or 'vllm'"),
    ],
)
def test_validation_errors_name_the_field(change, message):
    raw = base()
    raw.update(change)
    with pytest.raises(UserError) as error:
        parse_generate_config(raw)
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_missing_output_and_top_level_shape():
    raw = base()
    del raw["output"]
    with pytest.raises(UserError, match=r"^config: output: Field required; add output to the config$"):
        parse_generate_config(raw)
    with pytest.raises(UserError, match="expected a mapping of settings at the top level, got list"):
        parse_generate_config([1])


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found; pass an existing YAML file"):
        load_generate_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(UserError, match="malformed YAML at line 2; fix the syntax"):
        load_generate_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("teacher: {path: t}\nprompts: {source: p.jsonl}\noutput: o.jsonl\n")
    with pytest.raises(UserError, match="is not key=value"):
        load_generate_config(good, ["sampling.seed"])


def test_pinned_settings_leave_out_output_and_max_examples():
    one = parse_generate_config({**base(), "prompts": {"source": "p", "max_examples": 3}})
    two = parse_generate_config({**base(), "output": "elsewhere/x.jsonl", "prompts": {"source": "p", "max_examples": 30}, "device": "cuda"})
    three = parse_generate_config({**base(), "prompts": {"source": "p"}, "sampling": {"seed": 1}})
    assert pinned_settings(one) == pinned_settings(two)
    assert pinned_settings(one) != pinned_settings(three)
    assert not {"output", "device"} & set(pinned_settings(one)) and "max_examples" not in pinned_settings(one)["prompts"]
