"""Logit losses against independent references: torch.nn.functional, and plain-Python loops over a 2x3 case."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmdistill.errors import UserError
from lmdistill.losses import logits as L

LOGIT_LOSSES = [
    "forward_kl", "reverse_kl", "jsd", "symmetric_kl", "tvd", "skew_forward_kl", "skew_reverse_kl", "adaptive_kl",
    "soft_ce", "logit_mse", "logit_cosine",
]
DIVERGENCES = [name for name in LOGIT_LOSSES if name != "soft_ce"]  # zero on identical inputs

# Two positions, vocabulary of three: small enough to check by hand-style loops.
STUDENT_ROWS = [[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]]
TEACHER_ROWS = [[0.2, 1.5, 0.7], [-0.4, 0.9, 0.0]]


def _tensors(dtype=torch.float64):
    return torch.tensor(STUDENT_ROWS, dtype=dtype), torch.tensor(TEACHER_ROWS, dtype=dtype)


def _random(shape=(2, 3, 7), seed=0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=generator, dtype=torch.float64) * 2
    teacher = torch.randn(shape, generator=generator, dtype=torch.float64) * 2
    return student, teacher


# ---- plain-Python references (lists, math; no torch) ----

def _softmax(row, temperature=1.0):
    exps = [math.exp(z / temperature) for z in row]
    return [e / sum(exps) for e in exps]


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _mix(w, p, q):
    return [w * pi + (1 - w) * qi for pi, qi in zip(p, q)]


def _reference(name, student_row, teacher_row, temperature, **params):
    p_t, p_s = _softmax(teacher_row, temperature), _softmax(student_row, temperature)
    if name == "forward_kl":
        return _kl(p_t, p_s)
    if name == "reverse_kl":
        return _kl(p_s, p_t)
    if name == "jsd":
        beta = params["beta"]
        m = _mix(beta, p_t, p_s)
        return beta * _kl(p_t, m) + (1 - beta) * _kl(p_s, m)
    if name == "symmetric_kl":
        return _kl(p_t, p_s) + _kl(p_s, p_t)
    if name == "tvd":
        return 0.5 * sum(abs(a - b) for a, b in zip(p_t, p_s))
    if name == "skew_forward_kl":
        return _kl(p_t, _mix(params["alpha"], p_t, p_s))
    if name == "skew_reverse_kl":
        return _kl(p_s, _mix(params["alpha"], p_s, p_t))
    if name == "soft_ce":
        return -sum(a * math.log(b) for a, b in zip(p_t, p_s))
    if name == "logit_mse":
        return sum((s / temperature - t / temperature) ** 2 for s, t in zip(student_row, teacher_row)) / len(student_row)
    if name == "logit_cosine":
        dot = sum(s * t for s, t in zip(student_row, teacher_row))
        norms = math.sqrt(sum(s * s for s in student_row)) * math.sqrt(sum(t * t for t in teacher_row))
        return 1 - dot / norms
    raise AssertionError(name)


REFERENCE_CASES = [
    ("forward_kl", {}), ("reverse_kl", {}), ("jsd", {"beta": 0.5}), ("jsd", {"beta": 0.3}), ("symmetric_kl", {}),
    ("tvd", {}), ("skew_forward_kl", {"alpha": 0.1}), ("skew_forward_kl", {"alpha": 0.6}),
    ("skew_reverse_kl", {"alpha": 0.1}), ("skew_reverse_kl", {"alpha": 0.6}), ("soft_ce", {}), ("logit_mse", {}),
    ("logit_cosine", {}),
]


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("name,params", REFERENCE_CASES)
def test_matches_plain_python_reference(name, params, temperature):
    student, teacher = _tensors()
    got = getattr(L, name)(student, teacher, temperature=temperature, **params)
    expected = [
        temperature**2 * _reference(name, s, t, temperature, **params) for s, t in zip(STUDENT_ROWS, TEACHER_ROWS)
    ]
    assert got.shape == (2,)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_forward_and_reverse_kl_match_torch_kl_div(temperature):
    student, teacher = _random()
    log_s = F.log_softmax(student / temperature, dim=-1)
    log_t = F.log_softmax(teacher / temperature, dim=-1)
    forward = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1) * temperature**2
    reverse = F.kl_div(log_t, log_s, reduction="none", log_target=True).sum(-1) * temperature**2
    torch.testing.assert_close(L.forward_kl(student, teacher, temperature=temperature), forward, rtol=0, atol=1e-10)
    torch.testing.assert_close(L.reverse_kl(student, teacher, temperature=temperature), reverse, rtol=0, atol=1e-10)


def test_jsd_endpoints_are_exactly_forward_and_reverse_kl():
    student, teacher = _random()
    assert torch.equal(L.jsd(student, teacher, beta=0.0), L.forward_kl(student, teacher))
    assert torch.equal(L.jsd(student, teacher, beta=1.0), L.reverse_kl(student, teacher))
    # Just inside the endpoints the formula itself is near 0, which is why the endpoints are special-cased.
    assert L.jsd(student, teacher, beta=1e-9).abs().max() < 1e-6


def test_skew_kl_at_alpha_zero_is_plain_kl():
    student, teacher = _random()
    torch.testing.assert_close(L.skew_forward_kl(student, teacher, alpha=0.0), L.forward_kl(student, teacher))
    torch.testing.assert_close(L.skew_reverse_kl(student, teacher, alpha=0.0), L.reverse_kl(student, teacher))


@pytest.mark.parametrize("name", DIVERGENCES)
def test_identical_inputs_give_zero(name):
    student, _ = _random()
    assert getattr(L, name)(student, student.clone()).abs().max() < 1e-12


def test_soft_ce_is_forward_kl_plus_teacher_entropy():
    student, teacher = _random()
    p_t = torch.softmax(teacher, -1)
    entropy = -(p_t * p_t.log()).sum(-1)
    torch.testing.assert_close(L.soft_ce(student, teacher), L.forward_kl(student, teacher) + entropy)


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_temperature_squared_scaling_on_and_off(name):
    student, teacher = _random()
    scaled = getattr(L, name)(student, teacher, temperature=2.5)
    unscaled = getattr(L, name)(student, teacher, temperature=2.5, scale_by_temperature_squared=False)
    torch.testing.assert_close(scaled, 6.25 * unscaled, rtol=0, atol=1e-12)
    # The temperature divides the logits before the softmax: T = 2.5 equals T = 1 on logits / 2.5.
    torch.testing.assert_close(unscaled, getattr(L, name)(student / 2.5, teacher / 2.5), rtol=0, atol=1e-12)


def test_higher_temperature_softens_the_teacher():
    _, teacher = _random()
    sharp = L.soft_ce(teacher, teacher, temperature=0.5, scale_by_temperature_squared=False)  # = entropy of p_t
    soft = L.soft_ce(teacher, teacher, temperature=4.0, scale_by_temperature_squared=False)
    assert (soft > sharp).all()
    assert (soft <= math.log(teacher.shape[-1]) + 1e-12).all()


def _hand_akl_case():
    # p_t = [0.4, 0.35, 0.25], p_s = [0.1, 0.6, 0.3]; logits are log-probabilities.
    teacher = torch.tensor([0.4, 0.35, 0.25], dtype=torch.float64).log()
    student = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64).log()
    forward = 0.4 * math.log(0.4 / 0.1) + 0.35 * math.log(0.35 / 0.6) + 0.25 * math.log(0.25 / 0.3)
    reverse = 0.1 * math.log(0.1 / 0.4) + 0.6 * math.log(0.6 / 0.35) + 0.3 * math.log(0.3 / 0.25)
    return student, teacher, forward, reverse


@pytest.mark.parametrize(
    "mu,head_gap,tail_gap",
    [
        # μ = 0.5: 0.4 < 0.5, so the second token (cumulative 0.75) is needed to reach μ: head = {0.4, 0.35}.
        (0.5, 0.3 + 0.25, 0.05),
        # μ = 0.45: still needs two tokens.
        (0.45, 0.55, 0.05),
        # μ = 0.3: the first token alone reaches it: head = {0.4}.
        (0.3, 0.3, 0.25 + 0.05),
        # μ = 0: no token is needed, all tail -> pure reverse KL.
        (0.0, 0.0, 0.6),
        # μ = 1: every token is head -> pure forward KL.
        (1.0, 0.6, 0.0),
    ],
)
def test_adaptive_kl_hand_computed_head_and_tail(mu, head_gap, tail_gap):
    student, teacher, forward, reverse = _hand_akl_case()
    total = head_gap + tail_gap
    expected = head_gap / total * forward + tail_gap / total * reverse
    got = L.adaptive_kl(student, teacher, mu=mu)
    assert abs(got.item() - expected) < 1e-10


def test_adaptive_kl_gates_carry_no_gradient():
    student, teacher, _, _ = _hand_akl_case()
    student = student.clone().requires_grad_(True)
    L.adaptive_kl(student, teacher, mu=0.5).backward()
    fixed = student.detach().clone().requires_grad_(True)
    (0.55 / 0.6 * L.forward_kl(fixed, teacher) + 0.05 / 0.6 * L.reverse_kl(fixed, teacher)).backward()
    torch.testing.assert_close(student.grad, fixed.grad, rtol=0, atol=1e-12)


def test_ce_matches_loop_and_ignores_index():
    student, _ = _tensors()
    labels = torch.tensor([2, -100])
    got = L.ce(student, labels)
    p = _softmax(STUDENT_ROWS[0])
    assert abs(got[0].item() + math.log(p[2])) < 1e-12
    assert got[1].item() == 0.0
    smoothed = L.ce(student, torch.tensor([2, 0]), label_smoothing=0.3)
    for row, label, value in zip(STUDENT_ROWS, [2, 0], smoothed):
        logp = [math.log(x) for x in _softmax(row)]
        expected = -(0.7 * logp[label] + 0.3 * sum(logp) / 3)
        assert abs(value.item() - expected) < 1e-12


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_masked_vocabulary_entries_give_no_nan(name):
    student, teacher = _random(shape=(2, 6))
    masked_student, masked_teacher = student.clone(), teacher.clone()
    masked_student[:, 2] = -math.inf
    masked_teacher[:, 2] = -math.inf
    masked_student.requires_grad_(True)
    value = getattr(L, name)(masked_student, masked_teacher, temperature=2.0)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(masked_student.grad).all()
    keep = [0, 1, 3, 4, 5]
    reduced = getattr(L, name)(student[:, keep], teacher[:, keep], temperature=2.0)
    if name == "logit_mse":  # the masked entry counts as a zero in the mean over V
        reduced = reduced * 5 / 6
    torch.testing.assert_close(value, reduced, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,params", [("forward_kl", {}), ("jsd", {"beta": 0.3}), ("skew_reverse_kl", {}),
                                         ("tvd", {}), ("logit_cosine", {})])
def test_gradcheck(name, params):
    student, teacher = _random(shape=(2, 4), seed=3)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    fn = getattr(L, name)
    assert torch.autograd.gradcheck(lambda s, t: fn(s, t, temperature=1.5, **params), (student, teacher))


def test_low_precision_inputs_compute_in_float32():
    student, teacher = _random()
    got = L.forward_kl(student.to(torch.bfloat16), teacher.to(torch.bfloat16))
    assert got.dtype == torch.float32
    expected = L.forward_kl(student.to(torch.bfloat16).double(), teacher.to(torch.bfloat16).double())
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda s, t: L.forward_kl(s, t, temperature=0.0),
        lambda s, t: L.jsd(s, t, beta=1.5),
        lambda s, t: L.skew_forward_kl(s, t, alpha=-0.1),
        lambda s, t: L.adaptive_kl(s, t, mu=2.0),
        lambda s, t: L.tvd(s, t[..., :-1]),
        lambda s, t: L.ce(s, torch.zeros(5, dtype=torch.long)),
    ],
)
def test_bad_parameters_raise_user_error(call):
    student, teacher = _random()
    with pytest.raises(UserError):
        call(student, teacher)
