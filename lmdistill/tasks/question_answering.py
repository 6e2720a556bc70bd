"""Extractive question answering (SQuAD): start and end logits over a window's positions, EM/F1 on whole questions.

The distilled logits are (B, 2, S): the start and the end distribution over the window's positions; question and
padding positions hold the dtype's lowest value, so every divergence sees only the context and the no-answer
position 0. Targets are the gold (start, end) token positions (B, 2); CE on them is the usual QA loss.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForQuestionAnswering

from lmdistill.data.qa import load_qa_examples, qa_windows
from lmdistill.data.qa_windows import collate_qa
from lmdistill.eval.qa_runner import answers, span_logits
from lmdistill.eval.squad import squad_scores
from lmdistill.tasks.base import OneLayerStack, no_rollout

class QuestionAnsweringTask(OneLayerStack):
    name = "question_answering"
    model_class = AutoModelForQuestionAnswering
    lora_task_type = "QUESTION_ANS"
    data_fields = frozenset({"doc_stride", "max_question_tokens", "max_answer_length"})
    headless_logits = False
    pipeline_tag = "question-answering"
    samples_from_prompts = False
    cached_positions = None

    def __init__(self):
        self.eval_questions: list[dict] = []
        self.max_answer_length = 30

    def bind_model(self, model):
        return None

    def load_datasets(self, data, tokenizer, seed):
        train, held_out = load_qa_examples(data, seed)
        self.eval_questions, self.max_answer_length = held_out, data.max_answer_length
        evaluation = qa_windows(held_out, tokenizer, data, "eval") if held_out else None
        return qa_windows(train, tokenizer, data, "train"), evaluation

    def model_kwargs(self):
        return {}

    def collate(self, examples, pad_token_id):
        return collate_qa(examples, pad_token_id)

    def output_logits(self, output, batch) -> torch.Tensor:
        return span_logits(output, batch["position_mask"])

    def align_positions(self, per_token: torch.Tensor) -> torch.Tensor:
        return per_token

    def targets(self, batch):
        targets = torch.stack([batch["start_positions"], batch["end_positions"]], dim=1)
        return targets, torch.ones_like(targets, dtype=torch.bool)

    def evaluate(self, student, teacher, examples, pad_token_id, batch_size, device):
        """``eval/exact_match`` and ``eval/f1`` (0-100, SQuAD's official normalisation) over the held-out questions;
        with a teacher, its scores and ``eval/teacher_f1_agreement`` (the student's F1 against the teacher's answers)."""
        version_2 = any(not question["answers"]["text"] for question in self.eval_questions)
        settings = {"max_answer_length": self.max_answer_length, "version_2": version_2}
        predicted = answers(student, self.eval_questions, examples, pad_token_id, batch_size, device, **settings)
        scores = {f"eval/{key}": value for key, value in squad_scores(predicted, self.eval_questions).items()}
        if teacher is not None:
            teacher_answers = answers(teacher, self.eval_questions, examples, pad_token_id, batch_size, device, **settings)
            teacher_scores = squad_scores(teacher_answers, self.eval_questions)
            scores["eval/teacher_exact_match"], scores["eval/teacher_f1"] = teacher_scores["exact_match"], teacher_scores["f1"]
            as_gold = [{**question, "answers": {"text": [teacher_answers[question["id"]]], "answer_start": [0]}}
                       for question in self.eval_questions]
            scores["eval/teacher_f1_agreement"] = squad_scores(predicted, as_gold)["f1"]
        return scores

    def rollout(self, student, batches, *, tokenizer, sampling, row_seeds):
        raise no_rollout(self.name)
