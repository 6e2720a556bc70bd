"""The trunk: one `train` for every config, the API and the CLI alike, Ctrl-C that ends every command, a label-only run
without a teacher, task-checked settings, and the step-1 loss of a CLI run against an independent computation."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BertConfig, BertModel, LlamaConfig

import lmdistill
from lmdistill import api, presets
from lmdistill.cli import main
from lmdistill.config import DataConfig, StudentConfig, dump_config, parse_config
from lmdistill.data.collate import batches_for_epoch
from lmdistill.errors import UserError
from lmdistill.models.build import build_student
from lmdistill.models.loading import load_tokenizer, model_from_config
from lmdistill.models.pruning import student_from_teacher
from lmdistill.tasks import get_task
from lmdistill.train import loop
from robust_helpers import VOCAB, llama_config, tiny_config, tiny_data, tiny_tokenizer_dir, write_config  # noqa: F401
from test_classification_helpers import make_tokenizer_dir, run_config, tiny_bert

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RUN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("generate-"))


@pytest.fixture(scope="module")
def bert_tokenizer_dir(tmp_path_factory):
    return make_tokenizer_dir(tmp_path_factory.mktemp("vocab"))


def _interrupt_at_step(monkeypatch, at: int) -> None:
    """Deliver a real SIGINT to this process right after optimizer step ``at`` (1-based) of every run."""
    original = loop.train_step

    def step_then_interrupt(run, step):
        result = original(run, step)
        if step + 1 == at:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(loop, "train_step", step_then_interrupt)


# --- one command, one function -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[p.name for p in RUN_CONFIGS])
def test_the_cli_and_the_api_run_the_same_stages_for_every_shipped_config(path, monkeypatch):
    """`lmdistill train --config X` and `lmdistill.distill(X)` hand the same stage configs to the one stage runner."""
    seen: dict[str, list] = {"cli": [], "api": []}
    caller = {"name": "cli"}

    def record(config, *, resume, stop_after):
        seen[caller["name"]].append(config.model_dump(mode="json"))
        return loop.RunResult(Path(config.output_dir), Path(config.output_dir) / "student", 1, 0.0, 0)

    monkeypatch.setattr(presets, "distill", record)
    assert main(["train", "--config", str(path)]) == 0
    caller["name"] = "api"
    lmdistill.distill(path)
    expected_stages = len(api.load_run_configs(path))
    assert len(seen["cli"]) == expected_stages and seen["cli"] == seen["api"]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_comment_names_the_command_that_runs_it(path):
    commands = [line.split("lmdistill ", 1)[1].split()[0] for line in path.read_text().splitlines()
                if line.startswith("#") and "lmdistill " in line and "--config" in line]
    expected = "generate" if path.name.startswith("generate-") else "train"
    assert commands and set(commands) == {expected}, commands


# --- Ctrl-C ends every command -------------------------------------------------------------------------------------

def test_ctrl_c_in_a_preset_stage_saves_exits_130_and_starts_no_further_stage(tmp_path, bert_tokenizer_dir, monkeypatch, capsys):
    raw = run_config(tmp_path, bert_tokenizer_dir, train={"max_steps": 8, "batch_size": 8, "log_every": 1, "progress": False})
    del raw["objective"]
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump({**raw, "preset": "minilm"}))
    _interrupt_at_step(monkeypatch, 2)
    assert main(["train", "--config", str(path)]) == 130
    assert "interrupted after 2 steps" in capsys.readouterr().err
    first, second = tmp_path / "run" / "1-attention_transfer", tmp_path / "run" / "2-finetune"
    assert (first / "checkpoints" / "step-00000002" / "trainer_state.json").is_file()
    assert not second.exists()  # the second stage would have started from a half-trained student


def test_run_stages_stops_at_the_first_stage_stopped_early(tmp_path, bert_tokenizer_dir):
    raw = run_config(tmp_path, bert_tokenizer_dir, train={"max_steps": 4, "batch_size": 8, "log_every": 1, "progress": False})
    del raw["objective"]
    configs = presets.expand_preset_config({**raw, "preset": "minilm"})
    results = presets.run_stages(configs, stop_after=1)
    assert [result.steps for result in results] == [1] and results[0].stopped_early


def test_ctrl_c_in_finetune_saves_and_exits_130(tmp_path, bert_tokenizer_dir, monkeypatch, capsys):
    raw = run_config(tmp_path, bert_tokenizer_dir, train={"max_steps": 6, "batch_size": 8, "log_every": 1, "progress": False})
    raw = {key: value for key, value in raw.items() if key not in ("teacher", "objective")}
    raw["student"] = {"config": tiny_bert(layers=1)}
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(raw))
    _interrupt_at_step(monkeypatch, 3)
    assert main(["finetune", "--config", str(path)]) == 130
    assert "interrupted after 3 steps" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())["step"] == 3


# --- label-only runs, fresh heads, dtypes ---------------------------------------------------------------------------

def test_a_label_only_run_loads_no_teacher(tmp_path, tiny_tokenizer_dir, tiny_data, monkeypatch):
    from lmdistill.train import run as run_module

    loaded = []
    monkeypatch.setattr(run_module, "load_teacher", lambda *a, **k: loaded.append(a) or pytest.fail("teacher loaded"))
    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, objective=[{"name": "ce"}],
                      student={"config": llama_config(VOCAB, num_hidden_layers=2)}, train={"max_steps": 1, "batch_size": 4, "progress": False})
    assert lmdistill.distill(raw).steps == 1  # a teacher is named, but no term reads it
    assert lmdistill.distill({**{k: v for k, v in raw.items() if k != "teacher"}, "output_dir": str(tmp_path / "no-teacher")}).steps == 1
    assert loaded == []


def test_a_fresh_classifier_head_takes_its_size_from_the_data(tmp_path, bert_tokenizer_dir):
    """A bare encoder fine-tuned on 4 named labels: the head gets 4 outputs without `num_labels` anywhere."""
    encoder_dir = tmp_path / "encoder"
    settings = {k: v for k, v in tiny_bert(layers=1).items() if k not in ("model_type", "num_labels")}
    BertModel(BertConfig(**settings)).save_pretrained(encoder_dir)
    names = ["world", "sports", "business", "science"]
    rows = [{"text": f"the movie was {word}", "label": names[i % 4]} for i, word in enumerate(["good", "bad"] * 8)]
    (tmp_path / "news.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    raw = {"output_dir": str(tmp_path / "run"), "task": "sequence_classification", "tokenizer": str(bert_tokenizer_dir),
           "student": {"path": str(encoder_dir)}, "data": {"train": str(tmp_path / "news.jsonl"), "labels": names, "max_length": 16},
           "train": {"max_steps": 1, "batch_size": 8, "progress": False}}
    result = api.finetune(raw)
    assert AutoModelForSequenceClassification.from_pretrained(result.student_dir).config.num_labels == 4


def test_student_dtype_applies_to_a_student_pruned_from_the_teacher():
    teacher = model_from_config(llama_config(VOCAB), seed=0)
    student = build_student(StudentConfig(from_teacher={"layers": [0, 3]}, dtype="bfloat16"), teacher,
                            model_class=AutoModelForCausalLM, seed=0)
    assert {parameter.dtype for parameter in student.parameters()} == {torch.bfloat16}
    assert {parameter.dtype for parameter in teacher.parameters()} == {torch.float32}


# --- settings that do not apply to the task -------------------------------------------------------------------------

@pytest.mark.parametrize("task,data,field", [
    ("sequence_classification", {"pack": False}, "pack"),
    ("sequence_classification", {"prompt_field": "question"}, "prompt_field"),
    ("causal_lm", {"labels": ["a", "b"]}, "labels"),
    ("causal_lm", {"text_pair_field": "second"}, "text_pair_field"),
])
def test_a_setting_that_does_not_apply_to_the_task_is_a_one_line_error(tmp_path, task, data, field, capsys):
    raw = {"output_dir": str(tmp_path / "run"), "task": task, "teacher": {"path": "t"}, "student": {"path": "s"},
           "data": {"train": "x.jsonl", **data}, "objective": [{"name": "ce"}], "train": {"max_steps": 1}}
    with pytest.raises(UserError, match=f"^data.{field} does not apply to task {task}; remove it from the config"):
        api.load_run_configs(raw)
    path = write_config(tmp_path / "run.yaml", raw)
    assert main(["train", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: data.{field} does not apply to task {task}")


@pytest.mark.parametrize("task,data", [
    ("seq2seq_lm", {"source_field": "en", "target_field": "de"}),
    ("sequence_classification", {"labels": ["neg", "pos"]}),
    ("causal_lm", {"format": "prompt_completion"}),
    ("question_answering", {"doc_stride": 32}),
])
def test_a_runs_saved_config_loads_back_for_every_task(tmp_path, task, data):
    # config.yaml writes every default out (also the other tasks' data fields); a default is not a setting.
    raw = {"output_dir": str(tmp_path / "run"), "task": task, "teacher": {"path": "t"}, "student": {"path": "s"},
           "data": {"train": "x.jsonl", **data}, "objective": [{"name": "ce"}], "train": {"max_steps": 1}}
    [config] = api.load_run_configs(raw)
    saved = yaml.safe_load(dump_config(config))
    assert set(DataConfig.model_fields) - set(get_task(task).data_fields) & set(saved["data"])  # other tasks' fields too
    [reloaded] = api.load_run_configs(saved)
    assert reloaded == config


# --- the article's call ---------------------------------------------------------------------------------------------

def test_the_articles_positional_call_equals_the_keyword_call():
    from lmdistill.article import KnowledgeDistillationModel

    torch.manual_seed(0)
    config = LlamaConfig(**{k: v for k, v in llama_config(VOCAB, num_hidden_layers=2).items() if k != "model_type"})
    student, teacher = AutoModelForCausalLM.from_config(config), AutoModelForCausalLM.from_config(config)
    model = KnowledgeDistillationModel(student, teacher)
    input_ids = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    positional_output, positional_loss = model(input_ids, attention_mask)
    keyword_output, keyword_loss = model(input_ids=input_ids, attention_mask=attention_mask)
    torch.testing.assert_close(positional_output.logits, keyword_output.logits)
    assert float(positional_loss) == pytest.approx(float(keyword_loss)) and float(positional_loss) > 0


# --- progress in a log file -----------------------------------------------------------------------------------------

def test_without_a_terminal_training_logs_progress_lines(tmp_path, tiny_tokenizer_dir, tiny_data, caplog):
    train = {"max_steps": 3, "batch_size": 4, "log_every": 1, "progress": True, "progress_seconds": 0}
    with caplog.at_level(logging.INFO, logger="lmdistill.progress"):
        lmdistill.distill(tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, train=train))
    lines = [record.getMessage() for record in caplog.records if record.name == "lmdistill.progress"]
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line.split()[:2] for line in lines] == [["step", "1/3"], ["step", "2/3"], ["step", "3/3"]]
    for line, loss in zip(lines, losses):
        words = line.split()
        assert words[2] == "loss" and float(words[3]) == pytest.approx(loss, abs=5e-5)
        assert words[4] == "tokens/s" and float(words[5]) > 0 and words[6] == "ETA"
    assert lines[-1].endswith("ETA 0:00:00")


# --- values from an independent computation -------------------------------------------------------------------------

def _first_batch(raw: dict, tokenizer_dir) -> dict[str, torch.Tensor]:
    task = get_task("causal_lm")
    examples, _ = task.load_datasets(DataConfig(**raw["data"]), load_tokenizer(str(tokenizer_dir)), raw["seed"])
    order = batches_for_epoch(len(examples), raw["train"]["batch_size"], raw["seed"], 0)[0]
    return task.collate([examples[j] for j in order], load_tokenizer(str(tokenizer_dir)).pad_token_id)


def _teacher_and_student(raw: dict):
    torch.manual_seed(raw["seed"])
    settings = {k: v for k, v in raw["teacher"]["config"].items() if k != "model_type"}
    teacher = AutoModelForCausalLM.from_config(LlamaConfig(**settings)).eval()
    return teacher, student_from_teacher(teacher, raw["student"]["from_teacher"]["layers"])


def test_cli_step_one_loss_equals_forward_kl_plus_ce_computed_by_hand(tmp_path, tiny_tokenizer_dir, tiny_data):
    # Large initial weights: peaked distributions, so the KL is far from 0 and float32 rounding stays relatively small.
    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, teacher={"config": llama_config(VOCAB, initializer_range=0.5)},
                      train={"max_steps": 1, "batch_size": 4, "log_every": 1, "progress": False})
    assert main(["train", "--config", str(write_config(tmp_path / "run.yaml", raw))]) == 0
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    batch = _first_batch(raw, tiny_tokenizer_dir)
    teacher, student = _teacher_and_student(raw)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        z_t, z_s = teacher(**inputs).logits[:, :-1].double(), student(**inputs).logits[:, :-1].double()
    targets = batch["labels"][:, 1:]
    valid = targets != -100
    temperature = 2.0
    p_t = torch.softmax(z_t / temperature, -1)
    kl = (p_t * (torch.log_softmax(z_t / temperature, -1) - torch.log_softmax(z_s / temperature, -1))).sum(-1) * temperature**2
    ce = F.cross_entropy(z_s.reshape(-1, z_s.shape[-1]), targets.reshape(-1), reduction="none").view_as(targets)
    expected_kl, expected_ce = float(kl[valid].mean()), float(ce[valid].mean())
    assert logged["loss/forward_kl"] == pytest.approx(expected_kl, rel=1e-5)
    assert logged["loss/ce"] == pytest.approx(expected_ce, rel=1e-5)
    assert logged["loss"] == pytest.approx(0.5 * expected_kl + 0.5 * expected_ce, rel=1e-5)


def test_on_policy_step_one_loss_is_reverse_kl_on_the_replayed_student_samples(tmp_path, tiny_tokenizer_dir, tiny_data):
    """lmbda=1: step 1 trains on the student's own samples; replaying them from the run's seed and computing reverse
    KL by hand on the generated positions gives the logged loss."""
    from lmdistill.config import SamplingConfig
    from lmdistill.data.sampling import row_seed
    from lmdistill.tasks.causal_rollout import student_rollout

    sampling = {"temperature": 1.0, "max_new_tokens": 5}
    raw = tiny_config(tmp_path / "run", tiny_tokenizer_dir, tiny_data, objective=[{"name": "reverse_kl", "weight": 1.0}],
                      teacher={"config": llama_config(VOCAB, initializer_range=0.5)},
                      on_policy={"lmbda": 1.0, "sampling": sampling},
                      train={"max_steps": 1, "batch_size": 4, "log_every": 1, "progress": False})
    lmdistill.distill(raw)
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    teacher, student = _teacher_and_student(raw)
    tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    first = _first_batch(raw, tiny_tokenizer_dir)
    # row seeds of micro-batch 0 of step 0, drawn the way lmdistill.train.transforms.rollout_row_seeds documents
    generator = torch.Generator().manual_seed(row_seed(raw["seed"], 0, 0, 0))
    seeds = torch.randint(0, 2**62, (first["input_ids"].shape[0],), generator=generator).tolist()
    batch = student_rollout(student, [first], row_seeds=[seeds], pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=tokenizer.eos_token_id, sampling=SamplingConfig(**sampling))[0]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        z_t, z_s = teacher(**inputs).logits[:, :-1].double(), student(**inputs).logits[:, :-1].double()
    valid = batch["labels"][:, 1:] != -100
    log_s, log_t = torch.log_softmax(z_s, -1), torch.log_softmax(z_t, -1)
    reverse_kl = (log_s.exp() * (log_s - log_t)).sum(-1)
    assert 4 <= int(valid.sum()) <= 4 * 5  # only the sampled tokens (at most 5 a row, up to an EOS) are in the loss
    assert logged["loss"] == pytest.approx(float(reverse_kl[valid].mean()), rel=1e-5)


def test_a_task_name_outside_the_registry_is_a_one_line_error():
    with pytest.raises(UserError, match="^unknown task 'summarise'; valid tasks: causal_lm, sequence_classification"):
        api.load_run_configs({"output_dir": "x", "task": "summarise", "student": {"path": "s"}, "data": {"train": "t"},
                              "train": {"max_steps": 1}})


def test_parse_config_still_validates_the_config_itself():
    with pytest.raises(UserError, match="no teacher is given"):
        parse_config({"output_dir": "x", "student": {"path": "s"}, "data": {"train": "t"},
                      "objective": [{"name": "forward_kl"}], "train": {"max_steps": 1}})
