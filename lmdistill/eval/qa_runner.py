"""Run extractive-QA models: start/end logits per window, answers per question, and saved models side by side
(``lmdistill eval --task question_answering``): EM/F1, predictions as ``{id: answer}`` JSON, size and speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForQuestionAnswering

from lmdistill.config import DataConfig
from lmdistill.data.qa import qa_windows
from lmdistill.data.qa_windows import collate_qa
from lmdistill.data.squad import read_squad
from lmdistill.eval.footprint import measure_latency, model_footprint
from lmdistill.eval.squad import postprocess, squad_scores
from lmdistill.models.heads import model_inputs
from lmdistill.models.loading import load_model, load_tokenizer


def span_logits(output, position_mask: torch.Tensor) -> torch.Tensor:
    """(B, 2, S) start and end logits with the illegal positions at the dtype's lowest value."""
    stacked = torch.stack([output.start_logits, output.end_logits], dim=1)
    return stacked.masked_fill(~position_mask[:, None, :], torch.finfo(stacked.dtype).min)


@torch.no_grad()
def predict_spans(model, windows: list[dict], pad_token_id: int, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end logits of every window, (N, S_max) float32 on the CPU (padding positions at the lowest value)."""
    was_training = model.training
    model.eval()
    width = max(len(window["input_ids"]) for window in windows)
    starts, ends = [], []
    for first in range(0, len(windows), batch_size):
        batch = collate_qa(windows[first:first + batch_size], pad_token_id)
        logits = span_logits(model(**{k: v.to(device) for k, v in model_inputs(batch).items()}), batch["position_mask"].to(device))
        padded = torch.full((logits.shape[0], 2, width), torch.finfo(torch.float32).min)
        padded[..., :logits.shape[-1]] = logits.float().cpu()
        starts.append(padded[:, 0])
        ends.append(padded[:, 1])
    model.train(was_training)
    return torch.cat(starts), torch.cat(ends)


def answers(model, examples: list[dict], windows: list[dict], pad_token_id: int, batch_size: int, device, *,
            max_answer_length: int, version_2: bool) -> dict[str, str]:
    """{question id: predicted answer text} of ``model``."""
    start, end = predict_spans(model, windows, pad_token_id, batch_size, device)
    return postprocess(examples, windows, start, end, max_answer_length=max_answer_length, version_2=version_2)


def evaluate_qa_dirs(models: dict[str, str | Path], data: str, *, teacher: str | Path | None = None,
                     max_examples: int | None = None, max_length: int = 384, doc_stride: int = 128,
                     max_answer_length: int = 30, batch_size: int = 16) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
    """(scores, predictions) per model name (``teacher`` first when given) on SQuAD-format ``data``.

    scores: ``exact_match``, ``f1`` (and the v2 HasAns/NoAns split when the data has unanswerable questions),
    ``parameters``, ``layers``, ``latency_ms_per_question`` (CPU, one window of up to ``max_length`` tokens) and,
    with a teacher, ``teacher_f1_agreement``. predictions: {question id: answer text}, the official scripts' format.
    """
    ordered = ({"teacher": teacher} if teacher is not None else {}) | dict(models)
    tokenizer = load_tokenizer(str(next(iter(ordered.values()))))
    questions = read_squad(data, max_examples=max_examples)
    settings = DataConfig(train=data, max_length=max_length, doc_stride=doc_stride)
    windows = qa_windows(questions, tokenizer, settings, "eval")
    version_2 = any(not question["answers"]["text"] for question in questions)
    scores, predictions = {}, {}
    for name, folder in ordered.items():
        model = load_model(str(folder), model_class=AutoModelForQuestionAnswering, what=f"model {name}").eval()
        predicted = answers(model, questions, windows, tokenizer.pad_token_id, batch_size, torch.device("cpu"),
                            max_answer_length=max_answer_length, version_2=version_2)
        row = {"layers": model.config.num_hidden_layers, **squad_scores(predicted, questions),
               "parameters": model_footprint(model)["parameters"]}
        latency = measure_latency(model, torch.tensor([windows[0]["input_ids"]]))
        row["latency_ms_per_question"] = latency["latency_ms_per_example"]
        if teacher is not None and name != "teacher":
            as_gold = [{**q, "answers": {"text": [predictions["teacher"][q["id"]]], "answer_start": [0]}} for q in questions]
            row["teacher_f1_agreement"] = squad_scores(predicted, as_gold)["f1"]
        scores[name], predictions[name] = row, predicted
    return scores, predictions
