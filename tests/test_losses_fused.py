"""The fused loss equals the unfused ``get(name)`` + ``reduce`` on full logits, in value and in gradients."""

from __future__ import annotations

import math

import pytest
import torch

from lmdistill.errors import UserError
from lmdistill.losses import get, reduce
from lmdistill.losses.fused import fused_linear_divergence
from lmdistill.losses.fused_chunks import even_chunk
from lmdistill.losses.fused_kernels import KERNELS, RowBlock

N, H_STUDENT, H_TEACHER, V = 37, 19, 23, 101

DIVERGENCES = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("symmetric_kl", {}),
    ("tvd", {}),
    ("soft_ce", {}),
    ("jsd", {"beta": 0.5}),
    ("jsd", {"beta": 0.2}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 1.0}),
    ("skew_forward_kl", {"alpha": 0.1}),
    ("skew_forward_kl", {"alpha": 0.0}),
    ("skew_forward_kl", {"alpha": 1.0}),
    ("skew_reverse_kl", {"alpha": 0.3}),
    ("skew_reverse_kl", {"alpha": 0.0}),
    ("adaptive_kl", {"mu": 0.5}),  # no analytic kernel: autograd on each row block
    ("logit_mse", {}),
]


def _inputs(dtype=torch.float64, teacher_width=H_TEACHER, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)

    tensors = {
        "student_hidden": randn(N, H_STUDENT).requires_grad_(True),
        "student_weight": randn(V, H_STUDENT, scale=0.7).requires_grad_(True),
        "teacher_hidden": randn(N, teacher_width),
        "teacher_weight": randn(V, teacher_width, scale=0.7),
        "student_bias": randn(V).requires_grad_(True) if bias else None,
        "teacher_bias": randn(V) if bias else None,
    }
    mask = torch.rand(N, generator=generator) > 0.3
    return tensors, mask


def _linear(hidden, weight, bias, scale=1.0, softcap=None):
    logits = hidden @ weight.t() + (0 if bias is None else bias)
    logits = scale * logits
    return logits if softcap is None else softcap * torch.tanh(logits / softcap)


def _reference(tensors, mask, name, params, temperature=1.0, scale=1.0, softcap=None, num_valid=None, **kwargs):
    student_logits = _linear(
        tensors["student_hidden"], tensors["student_weight"], tensors["student_bias"], scale, softcap
    )
    teacher_logits = _linear(
        tensors["teacher_hidden"], tensors["teacher_weight"], tensors["teacher_bias"], scale, softcap
    )
    per_position = get(name)(student_logits, teacher_logits, temperature=temperature, **kwargs, **params)
    return reduce(per_position, mask, num_valid=num_valid)


def _grads(loss, tensors):
    wrt = [tensors[key] for key in ("student_hidden", "student_weight", "student_bias") if tensors[key] is not None]
    if not loss.requires_grad:  # e.g. skew KL with alpha = 1 is identically 0
        return [torch.zeros_like(tensor) for tensor in wrt]
    return torch.autograd.grad(loss, wrt)


def _assert_close(actual, expected, rtol, atol=0.0):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize(("name", "params"), DIVERGENCES, ids=lambda x: str(x))
def test_equals_unfused_with_mask_bias_temperature_and_different_widths(name, params):
    tensors, mask = _inputs()
    fused = fused_linear_divergence(**tensors, divergence=name, temperature=2.0, mask=mask, chunk_tokens=8, **params)
    expected = _reference(tensors, mask, name, params, temperature=2.0)
    _assert_close(fused, expected, rtol=1e-10, atol=1e-12)
    for actual, wanted in zip(_grads(fused, tensors), _grads(expected, tensors)):
        _assert_close(actual, wanted, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("name", "params"), [DIVERGENCES[0], DIVERGENCES[5], DIVERGENCES[12], DIVERGENCES[3]])
def test_float32_equal_widths_no_bias_matches_to_1e_5(name, params):
    tensors, mask = _inputs(torch.float32, teacher_width=H_STUDENT, bias=False)
    fused = fused_linear_divergence(
        **tensors, divergence=name, temperature=0.7, scale_by_temperature_squared=False, chunk_tokens=8, **params
    )
    expected = _reference(tensors, None, name, params, temperature=0.7, scale_by_temperature_squared=False)
    _assert_close(fused, expected, rtol=1e-5, atol=1e-7)
    for actual, wanted in zip(_grads(fused, tensors), _grads(expected, tensors)):
        _assert_close(actual, wanted, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("given", ["teacher_logits", "teacher_log_probs"])
def test_teacher_given_as_logits_or_log_probs(given):
    tensors, mask = _inputs()
    teacher_logits = _linear(tensors.pop("teacher_hidden"), tensors.pop("teacher_weight"), tensors.pop("teacher_bias"))
    temperature = 1.5
    teacher = teacher_logits if given == "teacher_logits" else torch.log_softmax(teacher_logits / temperature, -1)
    fused = fused_linear_divergence(
        **tensors, **{given: teacher}, divergence="jsd", beta=0.4, temperature=temperature, mask=mask, chunk_tokens=5
    )
    student_logits = _linear(tensors["student_hidden"], tensors["student_weight"], tensors["student_bias"])
    expected = reduce(get("jsd")(student_logits, teacher_logits, temperature=temperature, beta=0.4), mask)
    _assert_close(fused, expected, rtol=1e-10)
    for actual, wanted in zip(_grads(fused, tensors), _grads(expected, tensors)):
        _assert_close(actual, wanted, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "skew_reverse_kl"])
def test_logit_scale_and_softcap_equal_applying_them_to_the_logits(name):
    tensors, mask = _inputs()
    fused = fused_linear_divergence(
        **tensors, divergence=name, temperature=1.3, mask=mask, logit_scale=2.5, logit_softcap=3.0, chunk_tokens=16
    )
    expected = _reference(tensors, mask, name, {}, temperature=1.3, scale=2.5, softcap=3.0)
    _assert_close(fused, expected, rtol=1e-10)
    for actual, wanted in zip(_grads(fused, tensors), _grads(expected, tensors)):
        _assert_close(actual, wanted, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("name", "params"), [d for d in DIVERGENCES if d[0] in KERNELS], ids=lambda x: str(x))
def test_analytic_kernel_gradient_equals_autograd(name, params):
    generator = torch.Generator().manual_seed(1)
    student_logits = torch.randn(3, 11, generator=generator, dtype=torch.float64) * 2
    teacher_logits = torch.randn(3, 11, generator=generator, dtype=torch.float64) * 2
    log_q, log_p = torch.log_softmax(student_logits, -1), torch.log_softmax(teacher_logits, -1)
    block = RowBlock(student_logits.clone(), teacher_logits.clone(), torch.empty_like(log_q), log_q.clone(),
                     log_p.clone(), log_q.exp(), log_p.exp(), torch.empty_like(log_q))
    loss_rows, factor = KERNELS[name](block, **params)

    variable = student_logits.clone().requires_grad_(True)
    expected = get(name)(variable, teacher_logits, **params)
    only_logits = {"student_hidden": variable, "student_weight": None, "student_bias": None}
    (expected_grad,) = _grads(expected.sum(), only_logits)
    _assert_close(loss_rows, expected.detach(), rtol=1e-12, atol=1e-14)
    _assert_close(block.grad * factor, expected_grad, rtol=1e-10, atol=1e-14)


def test_bfloat16_runs_close_to_float64_and_returns_input_dtypes():
    tensors, mask = _inputs(torch.bfloat16)
    fused = fused_linear_divergence(**tensors, divergence="forward_kl", temperature=2.0, mask=mask, chunk_tokens=8)
    grads = _grads(fused, tensors)
    assert fused.dtype == torch.bfloat16 and all(grad.dtype == torch.bfloat16 for grad in grads)
    exact = {
        key: None if value is None else value.detach().double().requires_grad_(value.requires_grad)
        for key, value in tensors.items()
    }
    expected = _reference(exact, mask, "forward_kl", {}, temperature=2.0)
    _assert_close(fused.double(), expected.detach(), rtol=2e-2)
    for actual, wanted in zip(grads, _grads(expected, exact)):
        relative = (actual.double() - wanted).norm() / wanted.norm()
        assert relative < 3e-2


def test_under_autocast_the_logits_are_made_in_its_dtype_and_loss_and_gradients_keep_the_inputs_dtypes():
    tensors, mask = _inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = fused_linear_divergence(**tensors, divergence="forward_kl", temperature=2.0, mask=mask, chunk_tokens=8)
    grads = _grads(fused, tensors)
    assert fused.dtype == torch.float32 and all(grad.dtype == torch.float32 for grad in grads)
    # Independently: the casts autocast makes for a linear layer (inputs to bfloat16), then the unfused loss in float32.
    cast = {key: None if value is None else value.to(torch.bfloat16) for key, value in tensors.items()}
    student_logits = _linear(cast["student_hidden"], cast["student_weight"], cast["student_bias"]).float()
    teacher_logits = _linear(cast["teacher_hidden"], cast["teacher_weight"], cast["teacher_bias"]).float()
    expected = reduce(get("forward_kl")(student_logits, teacher_logits, temperature=2.0), mask)
    _assert_close(fused, expected, rtol=1e-2)
    for actual, wanted in zip(grads, _grads(expected, tensors)):
        assert wanted.dtype == torch.float32 and (actual - wanted).norm() / wanted.norm() < 3e-2


def test_all_masked_gives_zero_and_zero_gradients():
    tensors, _ = _inputs()
    fused = fused_linear_divergence(**tensors, divergence="jsd", mask=torch.zeros(N, dtype=torch.bool))
    assert fused.item() == 0.0
    assert all(torch.count_nonzero(grad) == 0 for grad in _grads(fused, tensors))


def test_global_denominator_and_batched_shape_and_grad_output():
    tensors, mask = _inputs(bias=False)
    batched = {key: None if value is None else value.view(1, N, -1) if key.endswith("hidden") else value
               for key, value in tensors.items()}
    fused = fused_linear_divergence(**batched, divergence="reverse_kl", mask=mask.view(1, N), num_valid=100)
    expected = _reference(tensors, mask, "reverse_kl", {}, num_valid=100)
    _assert_close(fused, expected, rtol=1e-10)
    fused_grads, expected_grads = _grads(3.0 * fused, tensors), _grads(3.0 * expected, tensors)
    for actual, wanted in zip(fused_grads, expected_grads):
        _assert_close(actual, wanted, rtol=1e-9, atol=1e-12)


def test_memory_budget_sets_the_chunk_and_never_changes_the_result():
    tensors, mask = _inputs()
    results = [
        fused_linear_divergence(**tensors, divergence="tvd", mask=mask, memory_budget_bytes=budget).item()
        for budget in (1, 2 * V * 8 * 7, 2**30)
    ]
    assert results[0] == pytest.approx(results[1], rel=1e-12) and results[1] == pytest.approx(results[2], rel=1e-12)


@pytest.mark.parametrize("num_rows, max_chunk, expected", [
    (2048, 551, 512), (2048, 4096, 2048), (10, 4, 4), (9, 4, 3), (7, 1, 1), (5, 0, 1), (0, 8, 1),
])
def test_chunks_are_equal_and_within_the_budget(num_rows, max_chunk, expected):
    chunk = even_chunk(num_rows, max_chunk)
    assert chunk == expected
    if num_rows:
        assert chunk <= max(max_chunk, 1) and -(-num_rows // chunk) == -(-num_rows // max(1, min(max_chunk, num_rows)))


def test_teacher_never_gets_a_gradient():
    tensors, mask = _inputs()
    tensors["teacher_hidden"].requires_grad_(True)
    tensors["teacher_weight"].requires_grad_(True)
    fused_linear_divergence(**tensors, divergence="forward_kl", mask=mask).backward()
    assert tensors["teacher_hidden"].grad is None and tensors["teacher_weight"].grad is None
    assert tensors["student_hidden"].grad is not None


def test_frozen_weight_gets_no_gradient_and_no_grad_mode_returns_value():
    tensors, mask = _inputs(bias=False)
    tensors["student_weight"].requires_grad_(False)
    fused = fused_linear_divergence(**tensors, divergence="forward_kl", mask=mask)
    (grad_hidden,) = torch.autograd.grad(fused, [tensors["student_hidden"]])
    with torch.no_grad():
        value = fused_linear_divergence(**tensors, divergence="forward_kl", mask=mask)
    assert value.item() == pytest.approx(fused.item(), rel=1e-12)
    assert math.isfinite(grad_hidden.abs().sum().item())


@pytest.mark.parametrize(
    "change",
    [
        {"teacher_hidden": None, "teacher_weight": None},
        {"teacher_logits": torch.zeros(N, V)},
        {"teacher_weight": torch.zeros(V + 1, H_TEACHER)},
        {"divergence": "no_such_loss"},
        {"divergence": "jsd", "beta": 1.5},
        {"divergence": "forward_kl", "beta": 0.5},
        {"temperature": 0.0},
        {"logit_softcap": -1.0},
        {"chunk_tokens": 0},
        {"mask": torch.ones(N + 1, dtype=torch.bool)},
    ],
)
def test_user_errors(change):
    tensors, _ = _inputs()
    with pytest.raises(UserError):
        fused_linear_divergence(**{**tensors, **change})


@pytest.mark.parametrize(("name", "params"), [("forward_kl", {}), ("jsd", {"beta": 0.5}), ("tvd", {}),
                                              ("skew_forward_kl", {"alpha": 0.1}), ("skew_reverse_kl", {"alpha": 0.1})])
@pytest.mark.parametrize("signal", ["teacher_logits", "teacher_log_probs"])
def test_minus_infinity_in_a_given_teacher_means_probability_zero(name, params, signal):
    tensors, mask = _inputs()
    student_logits = _linear(tensors["student_hidden"], tensors["student_weight"], tensors["student_bias"])
    teacher_logits = _linear(tensors["teacher_hidden"], tensors["teacher_weight"], tensors["teacher_bias"])
    ruled_out = torch.zeros_like(teacher_logits, dtype=torch.bool)
    ruled_out[:, 3] = True
    ruled_out[1, 5] = True
    teacher_logits = teacher_logits.masked_fill(ruled_out, float("-inf"))
    given = teacher_logits if signal == "teacher_logits" else torch.log_softmax(teacher_logits, -1)
    fused = fused_linear_divergence(tensors["student_hidden"], tensors["student_weight"], student_bias=tensors["student_bias"],
                                    divergence=name, mask=mask, chunk_tokens=5, **{signal: given}, **params)
    expected = reduce(get(name)(student_logits, teacher_logits, **params), mask)
    if name == "forward_kl":  # independently: the sum runs over the tokens the teacher allows only
        teacher_log_probs = torch.log_softmax(teacher_logits, -1)
        terms = teacher_log_probs.exp() * (teacher_log_probs - torch.log_softmax(student_logits, -1))
        per_row = terms.masked_fill(ruled_out, 0.0).sum(-1)
        _assert_close(expected, per_row[mask].mean(), rtol=1e-12)
    assert torch.isfinite(fused)
    _assert_close(fused, expected, rtol=1e-10)
    for actual, wanted in zip(_grads(fused, tensors), _grads(expected, tensors)):
        _assert_close(actual, wanted, rtol=1e-9, atol=1e-12)
