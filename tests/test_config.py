"""The run config: every shipped config loads; bad values fail at load with the field path; overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmdistill.config import LinearSchedule, load_config, parse_config, value_at
from lmdistill.errors import UserError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith(("generate-",)))


def _minimal(**changes) -> dict:
    raw = {
        "output_dir": "out",
        "tokenizer": "tok",
        "teacher": {"path": "teacher-dir"},
        "student": {"from_teacher": {"count": 2}},
        "data": {"train": "data.jsonl"},
        "objective": [{"name": "forward_kl", "weight": 1.0}],
        "train": {"max_steps": 3},
    }
    raw.update(changes)
    return raw


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.name for p in RUN_CONFIGS])
def test_every_shipped_run_config_loads(path):
    """Plain, preset (one config per stage) and fine-tune configs all validate."""
    from lmdistill.api import load_run_configs

    configs = load_run_configs(path, [])
    assert configs and all(config.objective and config.output_dir for config in configs)


def test_overrides_apply_dotted_paths_and_list_indices(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_minimal()))
    config = load_config(path, ["train.max_steps=7", "objective.0.temperature=2.5", "output_dir=elsewhere"])
    assert config.train.max_steps == 7
    assert config.objective[0].params["temperature"] == 2.5
    assert config.output_dir == "elsewhere"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"objective": [{"name": "forwrd_kl"}]}, "unknown loss 'forwrd_kl'; valid losses: .*forward_kl"),
        ({"objective": [{"name": "jsd", "betta": 0.5}]}, "no parameter 'betta'; valid parameters: beta"),
        ({"train": {"max_steps": 3, "learning_rate": 0}}, r"train.learning_rate: Input should be greater than 0"),
        ({"train": {"max_steps": 3, "learning_rate": -1e-4}}, r"train.learning_rate"),
        ({"train": {"max_steps": 3, "epochs": 1}}, "exactly one of max_steps, epochs"),
        ({"trian": {}}, "trian: unknown key"),
        ({"student": {"from_teacher": {"layers": [1, 1]}}}, "distinct layer indices"),
        ({"teacher": {"path": "a", "config": {"model_type": "llama"}}}, "exactly one of path, config, cache"),
        ({"teacher": {"cache": "c"}, "on_policy": {"lmbda": 0.5}}, "on_policy needs a live teacher"),
        ({"feature_teacher": 1}, "feature_teacher=1 but there are 1 teachers"),
    ],
)
def test_bad_configs_fail_at_load_with_the_field_path(changes, message):
    with pytest.raises(UserError, match=message):
        parse_config(_minimal(**changes))


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("output_dir: x\nteacher: [unclosed\n")
    with pytest.raises(UserError, match="malformed YAML at line"):
        load_config(path)


def test_missing_config_file():
    with pytest.raises(UserError, match="not found"):
        load_config("/nonexistent/run.yaml")


def test_linear_schedules():
    schedule = LinearSchedule(start=4.0, end=1.0)
    assert [value_at(schedule, p) for p in (0.0, 0.5, 1.0)] == [4.0, 2.5, 1.0]
    config = parse_config(_minimal(objective=[{"name": "forward_kl", "weight": {"start": 1.0, "end": 0.0}, "temperature": {"start": 4, "end": 1}}]))
    term = config.objective[0]
    assert value_at(term.weight, 0.25) == 0.75
    assert value_at(term.params["temperature"], 0.5) == 2.5
