"""Attention losses against references that slice away padded keys instead of masking them."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmdistill.errors import UserError
from lmdistill.losses.attention import (
    AttentionCapture,
    attention_kl,
    attention_mse,
    minilm,
    minilm_v2,
    scores_from_probabilities,
)

BATCH, SEQ = 2, 5
# Row 0 has 3 real tokens then 2 pads; row 1 is all real.
KEY_MASK = torch.tensor([[True, True, True, False, False], [True] * 5])
VALID = [3, 5]


def _capture(heads, head_dim, seed):
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(BATCH, heads, SEQ, head_dim, generator=generator, dtype=torch.float64) for _ in range(3))
    return AttentionCapture(query=q, key=k, value=v, scores=q @ k.transpose(-1, -2) / math.sqrt(head_dim))


def _sliced_kl(student_rows, teacher_rows):
    """KL(softmax(t) ‖ softmax(s)) over the last axis via F.kl_div: (..., K) -> (...)."""
    return F.kl_div(F.log_softmax(student_rows, -1), F.log_softmax(teacher_rows, -1), reduction="none",
                    log_target=True).sum(-1)


def _reference_per_query(student_relation, teacher_relation):
    """Per-query KL over real keys only, mean over heads; (B, h, S, S) -> (B, S)."""
    out = torch.zeros(BATCH, SEQ, dtype=torch.float64)
    for b, n in enumerate(VALID):
        out[b] = _sliced_kl(student_relation[b, :, :, :n], teacher_relation[b, :, :, :n]).mean(0)
    return out


def _gram(x):
    return x @ x.transpose(-1, -2) / math.sqrt(x.shape[-1])


def test_attention_kl_matches_sliced_reference_with_temperature():
    student, teacher = _capture(2, 4, 0), _capture(2, 6, 1)
    got = attention_kl(student, teacher, key_mask=KEY_MASK, temperature=2.0)
    expected = _reference_per_query(student.scores / 2.0, teacher.scores / 2.0)
    assert got.shape == (BATCH, SEQ)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_scores_at_padded_keys_change_nothing():
    student, teacher = _capture(2, 4, 0), _capture(2, 4, 1)
    noisy = [c._replace(scores=c.scores.clone()) for c in (student, teacher)]
    for capture in noisy:
        capture.scores[0, :, :, 3:] = 1e4 * torch.randn(2, SEQ, 2, dtype=torch.float64)
    for fn in (attention_kl, attention_mse, minilm):
        torch.testing.assert_close(fn(*noisy, key_mask=KEY_MASK), fn(student, teacher, key_mask=KEY_MASK), rtol=0,
                                   atol=1e-12)


def test_log_probabilities_stand_in_for_scores():
    student, teacher = _capture(2, 4, 0), _capture(2, 4, 1)
    from_probs = [c._replace(scores=scores_from_probabilities(torch.softmax(c.scores, -1))) for c in (student, teacher)]
    torch.testing.assert_close(attention_kl(*from_probs), attention_kl(student, teacher), rtol=0, atol=1e-10)


def test_attention_mse_matches_loop():
    student, teacher = _capture(2, 4, 0), _capture(2, 4, 1)
    got = attention_mse(student, teacher, key_mask=KEY_MASK)
    for b, n in enumerate(VALID):
        for query in range(SEQ):
            squares = [
                (student.scores[b, h, query, key].item() - teacher.scores[b, h, query, key].item()) ** 2
                for h in range(2) for key in range(n)
            ]
            assert abs(got[b, query].item() - sum(squares) / len(squares)) < 1e-12


def test_attention_mse_ignores_causal_minus_inf():
    student, teacher = _capture(2, 4, 0), _capture(2, 4, 1)
    causal = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    masked = [c._replace(scores=c.scores.masked_fill(~causal, -math.inf)) for c in (student, teacher)]
    got = attention_mse(*masked)
    assert torch.isfinite(got).all()
    # The last query sees every key, so it matches the unmasked loss.
    torch.testing.assert_close(got[:, -1], attention_mse(student, teacher)[:, -1], rtol=0, atol=1e-12)
    assert abs(got[0, 0].item() - (masked[0].scores[0, :, 0, 0] - masked[1].scores[0, :, 0, 0]).pow(2).mean()) < 1e-12


def test_minilm_matches_attention_plus_value_relation():
    student, teacher = _capture(2, 4, 0), _capture(2, 6, 1)
    got = minilm(student, teacher, key_mask=KEY_MASK)
    expected = _reference_per_query(student.scores, teacher.scores) + _reference_per_query(
        _gram(student.value), _gram(teacher.value)
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_minilm_v2_with_different_head_counts_and_widths():
    student, teacher = _capture(2, 6, 0), _capture(3, 8, 1)  # widths 12 and 24
    relation_heads = 4
    got = minilm_v2(student, teacher, key_mask=KEY_MASK, num_relation_heads=relation_heads)

    def relations(x):
        concatenated = torch.cat([x[:, h] for h in range(x.shape[1])], dim=-1)  # (B, S, width)
        d_r = concatenated.shape[-1] // relation_heads
        return torch.stack([_gram(concatenated[..., r * d_r:(r + 1) * d_r]) for r in range(relation_heads)], dim=1)

    terms = [
        _reference_per_query(relations(getattr(student, name)), relations(getattr(teacher, name)))
        for name in ("query", "key", "value")
    ]
    torch.testing.assert_close(got, sum(terms) / 3, rtol=0, atol=1e-10)
    assert minilm_v2(student, student, key_mask=KEY_MASK).abs().max() < 1e-12


@pytest.mark.parametrize("fn", [attention_kl, attention_mse, minilm])
def test_unequal_head_counts_raise(fn):
    with pytest.raises(UserError, match="head counts"):
        fn(_capture(2, 4, 0), _capture(3, 4, 1))


def test_minilm_v2_bad_relation_heads_and_missing_tensors():
    with pytest.raises(UserError, match="divide"):
        minilm_v2(_capture(2, 6, 0), _capture(3, 8, 1), num_relation_heads=5)
    with pytest.raises(UserError, match="value"):
        minilm_v2(_capture(2, 4, 0)._replace(value=None), _capture(2, 4, 1))


def test_all_padding_row_gives_zero_and_finite_gradients():
    student, teacher = _capture(2, 4, 0), _capture(2, 4, 1)
    scores = student.scores.clone().requires_grad_(True)
    key_mask = KEY_MASK.clone()
    key_mask[0] = False
    for fn in (attention_kl, attention_mse, minilm):
        value = fn(student._replace(scores=scores), teacher, key_mask=key_mask)
        assert (value[0] == 0).all()
        value.sum().backward()
        assert torch.isfinite(scores.grad).all()
        scores.grad = None


def test_gradcheck_attention_kl_and_minilm_v2():
    student, teacher = _capture(2, 4, 0), _capture(1, 8, 1)
    scores = student.scores.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda s: attention_kl(student._replace(scores=s), _capture(2, 4, 1), key_mask=KEY_MASK, temperature=1.5),
        (scores,),
    )
    query = student.query.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda q: minilm_v2(student._replace(query=q), teacher, key_mask=KEY_MASK, num_relation_heads=2), (query,)
    )


def test_padded_positions_do_not_reach_real_queries():
    student, teacher = _capture(2, 4, 0), _capture(3, 4, 1)
    noisy = []
    for capture in (student, teacher):
        q, k, v = (x.clone() for x in (capture.query, capture.key, capture.value))
        for x in (q, k, v):
            x[0, :, 3:] = 100 * torch.randn_like(x[0, :, 3:])
        noisy.append(AttentionCapture(q, k, v, None))
    got = minilm_v2(*noisy, key_mask=KEY_MASK, num_relation_heads=2)
    clean = minilm_v2(student._replace(scores=None), teacher._replace(scores=None), key_mask=KEY_MASK,
                      num_relation_heads=2)
    real_queries = KEY_MASK  # the caller's query mask; padded queries are its to drop
    torch.testing.assert_close(got[real_queries], clean[real_queries], rtol=0, atol=1e-10)


def test_causal_scores_with_left_padding_stay_finite_and_exact():
    student, teacher = _capture(2, 4, 0), _capture(2, 4, 1)
    causal = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    key_mask = torch.tensor([[False, False, True, True, True], [True] * 5])  # row 0: queries 0, 1 see no real key
    student_scores = student.scores.masked_fill(~causal, -math.inf).requires_grad_(True)
    teacher_scores = teacher.scores.masked_fill(~causal, -math.inf)
    for fn in (attention_kl, minilm):
        value = fn(student._replace(scores=student_scores), teacher._replace(scores=teacher_scores), key_mask=key_mask)
        (grad,) = torch.autograd.grad(value.sum(), student_scores)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    value = attention_kl(student._replace(scores=student_scores), teacher._replace(scores=teacher_scores),
                         key_mask=key_mask)
    for b in range(BATCH):
        for query in range(SEQ):
            keys = [k for k in range(query + 1) if key_mask[b, k]]
            if keys:
                expected = _sliced_kl(student.scores[b, :, query, keys], teacher.scores[b, :, query, keys]).mean()
                assert abs(value[b, query].item() - expected.item()) < 1e-10
            else:
                assert value[b, query].item() == 0.0


def test_rows_masked_inside_the_scores_without_key_mask_give_zero():
    # capture.py writes padding into the scores as -inf; a left-padded query then sees only -inf.
    student, teacher = _capture(2, 4, 0), _capture(2, 4, 1)
    blocked = torch.zeros(BATCH, 1, SEQ, SEQ, dtype=torch.bool)
    blocked[0, :, :, :2] = True
    student_scores = student.scores.masked_fill(blocked, -math.inf)
    student_scores[0, :, 0, :] = -math.inf
    student_scores.requires_grad_(True)
    teacher_scores = teacher.scores.masked_fill(blocked, -math.inf)
    teacher_scores[0, :, 0, :] = -math.inf
    value = attention_kl(student._replace(scores=student_scores), teacher._replace(scores=teacher_scores))
    (grad,) = torch.autograd.grad(value.sum(), student_scores)
    assert value[0, 0].item() == 0.0 and torch.isfinite(value).all() and torch.isfinite(grad).all()
    expected = attention_kl(student, teacher, key_mask=torch.tensor([[False, False, True, True, True], [True] * 5]))
    torch.testing.assert_close(value[:, 1:], expected[:, 1:], rtol=0, atol=1e-10)
