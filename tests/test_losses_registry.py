"""The loss registry: every shipped name, its kind and parameters, and errors for unknown names and parameters."""

import inspect

import pytest

from lmdistill.errors import UserError
from lmdistill.losses import get, names, spec, validate_params

EXPECTED = {
    "forward_kl": "logits", "reverse_kl": "logits", "jsd": "logits", "symmetric_kl": "logits", "tvd": "logits",
    "skew_forward_kl": "logits", "skew_reverse_kl": "logits", "adaptive_kl": "logits", "soft_ce": "logits",
    "logit_mse": "logits", "logit_cosine": "logits", "ce": "labels", "hidden_mse": "hidden",
    "hidden_cosine": "hidden",
    "hidden_mmd": "hidden", "attention_kl": "attention", "attention_mse": "attention", "minilm": "attention",
    "minilm_v2": "attention",
    "uld": "logits", "gold_hybrid": "logits", "span_logprob_mse": "spans",  # cross-tokenizer losses
    "token_reverse_kl": "tokens",  # on the student's own samples
}


def test_every_shipped_loss_is_registered_with_its_kind():
    assert names() == sorted(EXPECTED)
    for name, kind in EXPECTED.items():
        assert spec(name).kind == kind
        assert spec(name).description, f"{name} needs a one-line docstring"


def test_parameters_come_from_keyword_only_defaults():
    logit_common = {"temperature": 1.0, "scale_by_temperature_squared": True}
    assert spec("forward_kl").params == logit_common
    assert spec("jsd").params == {**logit_common, "beta": 0.5}
    assert spec("skew_reverse_kl").params == {**logit_common, "alpha": 0.1}
    assert spec("adaptive_kl").params == {**logit_common, "mu": 0.5}
    assert spec("ce").params == {"ignore_index": -100, "label_smoothing": 0.0}
    assert spec("hidden_mse").params == {}
    assert spec("attention_kl").params == {"temperature": 1.0}  # key_mask is the caller's, not a parameter
    assert spec("minilm_v2").params == {"num_relation_heads": 4}


def test_caller_arguments_match_the_kind():
    first_two = {
        "logits": ["student_logits", "teacher_logits"],
        "labels": ["student_logits", "labels"],
        "hidden": ["student_hidden", "teacher_hidden"],
        "attention": ["student", "teacher"],
        "spans": ["student_span_log_probs", "teacher_span_log_probs"],
        "tokens": ["student_token_log_probs", "teacher_token_log_probs"],
    }
    for name, kind in EXPECTED.items():
        parameters = inspect.signature(get(name)).parameters
        assert list(parameters)[:2] == first_two[kind], name
        if kind == "attention":
            assert parameters["key_mask"].default is None


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UserError) as error:
        get("forward_kld")
    assert "forward_kl" in str(error.value) and "minilm_v2" in str(error.value)


def test_unknown_parameter_lists_the_valid_ones():
    validate_params("jsd", {"beta": 0.1, "temperature": 2.0})
    with pytest.raises(UserError) as error:
        validate_params("jsd", {"alpha": 0.1})
    assert "'alpha'" in str(error.value) and "beta" in str(error.value)
    with pytest.raises(UserError, match="none"):
        validate_params("hidden_mse", {"temperature": 2.0})
