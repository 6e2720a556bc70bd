"""lmdistill.article: attention KL on HF probabilities equals the KL of raw scores; the wrapper on real tiny BERTs."""

from __future__ import annotations

import copy
import importlib.util
import math
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lmdistill.article import AttentionDistillationLoss, KnowledgeDistillationModel
from lmdistill.errors import UserError
from lmdistill.losses import reduce
from lmdistill.losses.attention import AttentionCapture, attention_kl

B, HEADS, S, D = 2, 3, 6, 4
MASK = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)


def _rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _raw_scores(seed):
    query, key = _rand(B, HEADS, S, D, seed=seed), _rand(B, HEADS, S, D, seed=seed + 1) * 2.0
    return query @ key.transpose(-1, -2) / math.sqrt(D)


def _hf_probabilities(raw_scores, mask):
    """What BERT returns with output_attentions: softmax of scores plus an additive dtype-minimum key mask."""
    additive = torch.zeros(mask.shape, dtype=raw_scores.dtype).masked_fill(~mask, torch.finfo(raw_scores.dtype).min)[:, None, None, :]
    return torch.softmax(raw_scores + additive, dim=-1)


def _hand_attention_kl(student_scores, teacher_scores, mask, temperature):
    """Loops: per valid query, KL over valid keys of softmax(scores / T), mean over heads, then over valid queries."""
    total, count = 0.0, 0
    for b in range(B):
        keys = mask[b]
        for q in range(S):
            if not mask[b, q]:
                continue
            per_head = []
            for h in range(HEADS):
                p = torch.softmax(teacher_scores[b, h, q, keys] / temperature, -1)
                r = torch.softmax(student_scores[b, h, q, keys] / temperature, -1)
                per_head.append(float((p * (p.log() - r.log())).sum()))
            total += sum(per_head) / HEADS
            count += 1
    return total / count


def test_loss_on_probabilities_equals_attention_kl_on_raw_scores():
    student_scores, teacher_scores = _raw_scores(1), _raw_scores(3)
    student_probs, teacher_probs = _hf_probabilities(student_scores, MASK), _hf_probabilities(teacher_scores, MASK)
    loss = AttentionDistillationLoss(temperature=3.0)(student_probs, teacher_probs, MASK.long())
    on_scores = reduce(attention_kl(AttentionCapture(scores=student_scores), AttentionCapture(scores=teacher_scores),
                                    key_mask=MASK, temperature=3.0), MASK)
    torch.testing.assert_close(loss, on_scores, rtol=1e-10, atol=1e-12)
    assert loss.item() == pytest.approx(_hand_attention_kl(student_scores, teacher_scores, MASK, 3.0), rel=1e-10)
    # The article's second softmax over probabilities gives a different (much smaller) number.
    twice = reduce(attention_kl(AttentionCapture(scores=student_probs), AttentionCapture(scores=teacher_probs),
                                key_mask=MASK, temperature=3.0), MASK)
    assert twice < 0.1 * loss


def test_loss_on_captured_scores_and_layer_lists():
    student_scores, teacher_scores = _raw_scores(5), _raw_scores(7)
    module = AttentionDistillationLoss(temperature=2.0)
    one = module(AttentionCapture(scores=student_scores), AttentionCapture(scores=teacher_scores), MASK)
    assert one.item() == pytest.approx(_hand_attention_kl(student_scores, teacher_scores, MASK, 2.0), rel=1e-10)
    other = module(AttentionCapture(scores=teacher_scores), AttentionCapture(scores=student_scores), MASK)
    both = module([AttentionCapture(scores=student_scores), AttentionCapture(scores=teacher_scores)],
                  [AttentionCapture(scores=teacher_scores), AttentionCapture(scores=student_scores)], MASK)
    torch.testing.assert_close(both, (one + other) / 2, rtol=1e-12, atol=1e-12)


def test_loss_errors_name_the_fix():
    with pytest.raises(UserError, match="not probabilities"):
        AttentionDistillationLoss()(_raw_scores(1), _hf_probabilities(_raw_scores(2), MASK))
    with pytest.raises(UserError, match="equal head counts"):
        AttentionDistillationLoss()(_hf_probabilities(_raw_scores(1), MASK)[:, :2], _hf_probabilities(_raw_scores(2), MASK))
    with pytest.raises(UserError, match="must be > 0"):
        AttentionDistillationLoss(temperature=0.0)


def _tiny_bert(layers, seed, heads=4, initializer_range=0.3):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=64,
                        max_position_embeddings=32, num_labels=2, initializer_range=initializer_range,
                        attn_implementation="eager")
    return BertForSequenceClassification(config)


def test_wrapper_on_tiny_berts_equals_loss_on_hf_output_attentions():
    teacher, student = _tiny_bert(4, seed=0), _tiny_bert(2, seed=1)
    input_ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
    with torch.no_grad():
        teacher_probs = teacher.eval()(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True).attentions
        student_probs = student.eval()(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True).attentions
    keys = attention_mask.bool()
    expected = 0.0
    for s, t in [(0, 1), (1, 3)]:  # uniform map 2 <- 4: round(1·4/2) − 1 = 1, round(2·4/2) − 1 = 3
        log_t = (teacher_probs[t].double().log() / 3.0).masked_fill(~keys[:, None, None, :], -math.inf).log_softmax(-1)
        log_s = (student_probs[s].double().log() / 3.0).masked_fill(~keys[:, None, None, :], -math.inf).log_softmax(-1)
        per_query = torch.where(keys[:, None, None, :], log_t.exp() * (log_t - log_s), 0.0).sum(-1).mean(1)
        expected += float(per_query[keys].mean()) / 2
    model = KnowledgeDistillationModel(student, teacher, temperature=3.0).eval()
    output, loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=torch.tensor([0, 1]))
    assert model.layer_map == [(0, 1), (1, 3)]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() > 1e-3  # peaked random attention: the check is not vacuous
    assert output.loss is not None and output.logits.shape == (2, 2)


def test_teacher_stays_frozen_and_in_eval_while_the_student_learns():
    teacher, student = _tiny_bert(2, seed=2), _tiny_bert(2, seed=3, initializer_range=0.02)
    teacher_before, student_before = copy.deepcopy(teacher.state_dict()), copy.deepcopy(student.state_dict())
    model = KnowledgeDistillationModel(student, teacher, temperature=1.0).train()
    assert not model.teacher.training and model.student.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batch = {"input_ids": torch.randint(1, 50, (2, 5), generator=torch.Generator().manual_seed(1)), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    _, loss = model(**batch)
    loss.backward()
    optimizer.step()
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())


def test_wrapper_refuses_different_head_counts():
    with pytest.raises(UserError, match="equal head counts"):
        KnowledgeDistillationModel(_tiny_bert(1, seed=0, heads=2), _tiny_bert(2, seed=0, heads=4))


def test_article_example_runs_and_its_loss_goes_down():
    path = Path(__file__).resolve().parents[1] / "examples" / "article_example.py"
    spec = importlib.util.spec_from_file_location("article_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    losses = example.main(steps=5, seed=0)
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
