"""Every shipped SST-2 config loads: the teacher's as a fine-tune config, the others as preset stage configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmdistill.finetune import finetune_config
from lmdistill.presets import load_preset_config, preset_stages

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_teacher_config_is_a_labels_only_run():
    raw = yaml.safe_load((CONFIGS / "sst2-teacher.yaml").read_text())
    config = finetune_config(raw, source="sst2-teacher.yaml")
    assert config.task == "sequence_classification" and [t.name for t in config.objective] == ["ce"]
    assert config.data.text_field == "sentence" and config.teacher is None and not config.needs_teacher


@pytest.mark.parametrize("path", sorted(p.name for p in CONFIGS.glob("sst2-*.yaml") if p.name != "sst2-teacher.yaml"))
def test_preset_config_expands_into_its_stages(path):
    configs = load_preset_config(CONFIGS / path)
    preset = yaml.safe_load((CONFIGS / path).read_text())["preset"]
    name = preset if isinstance(preset, str) else preset["name"]
    stages = preset_stages(name)
    assert [[t.name for t in c.objective] for c in configs] == [[t["name"] for t in s.objective] for s in stages]
    assert sum(c.train.max_steps for c in configs) == yaml.safe_load((CONFIGS / path).read_text())["train"]["max_steps"]
    assert all(c.teachers[0].path == "runs/sst2-teacher/student" for c in configs)
