"""Distilling from a teacher cache through the engine: k = V reaches the live-teacher student; clear errors otherwise."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lmdistill import distill
from lmdistill.cache import build_teacher_cache
from lmdistill.config import parse_config
from lmdistill.errors import UserError
from lmdistill.losses.sparse import sparse_from_logits
from lmdistill.objective import Features, Masks, build_terms, compute_terms
from lmdistill.teachers.cached import SparseTeacherBatch
from lmdistill.teachers.live import DenseTeacherBatch
from test_cache import VOCAB, char_run_config, char_tokenizer_dir  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"max_steps": 4, "batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "log_every": 1, "progress": False}
OBJECTIVE = [{"name": "jsd", "weight": 1.0, "beta": 0.3, "temperature": 2.0}, {"name": "ce", "weight": 0.5}]


def _losses(run_dir) -> list[dict]:
    return [line for line in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if line["split"] == "train"]


def assert_same_weights(actual_dir, expected_dir, atol: float = 1e-5) -> None:
    """The two student dirs hold the same tensors, to ``atol``."""
    expected, actual = load_file(str(expected_dir / "model.safetensors")), load_file(str(actual_dir / "model.safetensors"))
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=atol)


def test_a_full_cache_run_reaches_the_live_teacher_student(tmp_path, char_tokenizer_dir):
    live_raw = char_run_config(tmp_path / "live", char_tokenizer_dir, train=TRAIN, objective=OBJECTIVE)
    live = distill(live_raw)
    cache = build_teacher_cache(parse_config(live_raw), tmp_path / "cache", VOCAB, examples_per_shard=20)
    cached = distill({**live_raw, "output_dir": str(tmp_path / "cached"), "teacher": {"cache": str(cache)}})
    for live_line, cached_line in zip(_losses(tmp_path / "live"), _losses(tmp_path / "cached"), strict=True):
        for key in ("loss", "loss/jsd", "loss/ce"):
            assert cached_line[key] == pytest.approx(live_line[key], rel=1e-5, abs=1e-7), key
    assert_same_weights(cached.student_dir, live.student_dir)


def test_a_top_k_cache_run_trains(tmp_path, char_tokenizer_dir):
    raw = char_run_config(tmp_path / "run", char_tokenizer_dir, train=TRAIN, objective=OBJECTIVE)
    cache = build_teacher_cache(parse_config(raw), tmp_path / "cache", 8)
    result = distill({**raw, "teacher": {"cache": str(cache)}})
    lines = _losses(tmp_path / "run")
    assert result.steps == 4 and all(line["loss/jsd"] > 0 for line in lines)
    assert lines[-1]["loss"] == pytest.approx(lines[-1]["loss/jsd"] + 0.5 * lines[-1]["loss/ce"], rel=1e-6)


def test_a_large_vocabulary_cache_run_applies_the_head_at_loss_positions_only_with_the_same_result(tmp_path, char_tokenizer_dir):
    # fused_vocab_threshold 1 makes every vocabulary "large": the student runs headless and its head is applied to the
    # loss positions alone; the default threshold materialises (B, S, V) logits. Same losses, same weights.
    raw = char_run_config(tmp_path / "full", char_tokenizer_dir, train=TRAIN, objective=OBJECTIVE)
    cache = build_teacher_cache(parse_config(raw), tmp_path / "cache", 8)
    full = distill({**raw, "teacher": {"cache": str(cache)}})
    rows = distill({**raw, "output_dir": str(tmp_path / "rows"), "teacher": {"cache": str(cache)},
                    "train": {**TRAIN, "fused_vocab_threshold": 1}})
    for full_line, rows_line in zip(_losses(tmp_path / "full"), _losses(tmp_path / "rows"), strict=True):
        for key in ("loss", "loss/jsd", "loss/ce"):
            assert rows_line[key] == pytest.approx(full_line[key], rel=1e-5, abs=1e-7), key
    assert_same_weights(rows.student_dir, full.student_dir)


@pytest.mark.parametrize("term,message", [({"name": "hidden_mse", "layers": "last"}, "holds logits only"),
                                          ({"name": "logit_mse"}, "logit_mse.*full logits")])
def test_terms_a_cache_cannot_feed_are_user_errors(tmp_path, char_tokenizer_dir, term, message):
    raw = char_run_config(tmp_path / "run", char_tokenizer_dir, train=TRAIN)
    cache = build_teacher_cache(parse_config(raw), tmp_path / "cache", 4)
    with pytest.raises(UserError, match=message):
        distill({**raw, "output_dir": str(tmp_path / "bad"), "teacher": {"cache": str(cache)}, "objective": [term]})


def test_a_cache_of_other_data_is_refused_by_the_run(tmp_path, char_tokenizer_dir):
    raw = char_run_config(tmp_path / "run", char_tokenizer_dir, train=TRAIN)
    cache = build_teacher_cache(parse_config(raw), tmp_path / "cache", 4)
    other = {**raw, "teacher": {"cache": str(cache)}, "data": {**raw["data"], "max_examples": 5}}
    with pytest.raises(UserError, match="training examples are not the"):
        distill(other)


def test_a_full_sparse_teacher_gives_the_terms_of_the_live_teacher():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 5, 7, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 5, 7, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 7, (2, 5), generator=generator)
    targets[1, 3:] = -100
    masks = Masks(loss=targets != -100, tokens=torch.ones(2, 6, dtype=torch.bool), loss_count=8.0, token_count=12.0)
    terms = build_terms(parse_config(_minimal(OBJECTIVE + [{"name": "forward_kl"}])).objective, student_layers=1, teacher_layers=1)
    live = compute_terms(terms, Features(logits=student), DenseTeacherBatch(Features(logits=teacher)), targets, masks, None, 0.5)
    cached = compute_terms(terms, Features(logits=student), SparseTeacherBatch(sparse_from_logits(teacher, 7), vocab_size=7),
                           targets, masks, None, 0.5)
    assert live.keys() == cached.keys() == {"jsd", "ce", "forward_kl"}
    for label in live:
        torch.testing.assert_close(cached[label], live[label], rtol=0, atol=1e-10)
        torch.testing.assert_close(torch.autograd.grad(cached[label], student, retain_graph=True)[0],
                                   torch.autograd.grad(live[label], student, retain_graph=True)[0], rtol=0, atol=1e-10)


def test_a_headless_student_computes_its_head_once_for_the_sparse_kl_and_the_ce():
    # No logits: the sparse KL applies the head at the loss positions and the CE reads the same rows, although the
    # objective lists the CE first; both equal the terms of materialised float32 logits h·Wᵀ (values and gradients).
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, 5, 4, generator=generator, dtype=torch.float32, requires_grad=True)
    head = torch.randn(7, 4, generator=generator, dtype=torch.float32)
    teacher = torch.randn(2, 5, 7, generator=generator, dtype=torch.float32)
    targets = torch.randint(0, 7, (2, 5), generator=generator)
    targets[0, :2] = -100
    masks = Masks(loss=targets != -100, tokens=torch.ones(2, 6, dtype=torch.bool), loss_count=8.0, token_count=12.0)
    terms = build_terms(parse_config(_minimal([{"name": "ce", "weight": 0.5}, {"name": "forward_kl"}])).objective,
                        student_layers=1, teacher_layers=1)
    signal = SparseTeacherBatch(sparse_from_logits(teacher, 7), vocab_size=7)
    headless = Features(last_hidden=hidden, head_weight=head)
    shared = compute_terms(terms, headless, signal, targets, masks, None, 0.0)
    assert list(shared) == ["ce", "forward_kl"] and headless.loss_rows.shape == (8, 7)
    assert torch.autograd.grad(shared["ce"], headless.loss_rows, retain_graph=True)[0].abs().sum() > 0  # CE read the rows
    dense = compute_terms(terms, Features(logits=hidden @ head.T), signal, targets, masks, None, 0.0)
    for label in dense:
        torch.testing.assert_close(shared[label], dense[label], rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.autograd.grad(shared[label], hidden, retain_graph=True)[0],
                                   torch.autograd.grad(dense[label], hidden, retain_graph=True)[0], rtol=0, atol=1e-6)


def _minimal(objective) -> dict:
    return {"output_dir": "unused", "teacher": {"cache": "unused"}, "student": {"path": "unused"}, "data": {"train": "unused"},
            "objective": objective, "train": {"max_steps": 1}}
