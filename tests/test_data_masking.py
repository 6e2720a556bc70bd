"""data.mask_probability: the masking function, and the engine feeding the same masked batch to teacher and student."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from lmdistill import distill
from lmdistill.config import parse_config
from lmdistill.data.masking import mask_tokens, masking_generator
from lmdistill.data.sampling import row_seed
from lmdistill.errors import UserError
from lmdistill.api import load_run_configs
from lmdistill.train.transforms import MaskInputs
from test_classification_helpers import make_tokenizer_dir, run_config, tiny_bert  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
CLS, SEP, PAD, MASK = 2, 3, 0, 4


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tokenizer_dir(tmp_path_factory.mktemp("vocab"))


def test_masks_ordinary_tokens_at_the_rate_and_leaves_special_and_padding():
    rows, length = 400, 50
    ids = torch.randint(5, 26, (rows, length))
    ids[:, 0], ids[:, 30], ids[:, 31:] = CLS, SEP, PAD
    attention = (ids != PAD).long()
    masked = mask_tokens(ids, attention, probability=0.3, mask_token_id=MASK, protected_ids=[PAD, CLS, SEP, MASK],
                         generator=torch.Generator().manual_seed(7))
    changed = masked != ids
    assert not changed[:, 0].any() and not changed[:, 30:].any()  # [CLS], [SEP] and padding stay
    assert (masked[changed] == MASK).all()
    rate = changed[:, 1:30].double().mean().item()  # 11,600 draws: the standard error is 0.0043
    assert abs(rate - 0.3) < 0.02
    again = mask_tokens(ids, attention, probability=0.3, mask_token_id=MASK, protected_ids=[PAD, CLS, SEP, MASK],
                        generator=torch.Generator().manual_seed(7))
    assert torch.equal(masked, again)
    untouched = mask_tokens(ids, attention, probability=0.0, mask_token_id=MASK, protected_ids=[CLS],
                            generator=torch.Generator().manual_seed(7))
    assert torch.equal(untouched, ids)
    other_step = torch.rand(3, generator=masking_generator(0, 1, 0, 0))
    assert not torch.equal(torch.rand(3, generator=masking_generator(0, 0, 0, 0)), other_step)


def test_first_step_teacher_and_student_read_the_same_masked_batch(tmp_path, tokenizer_dir):
    """Step 1's soft-CE and CE against values computed by hand from the masked batch (the draws of the step's seed)."""
    from lmdistill.models.loading import load_tokenizer
    from lmdistill.tasks import get_task
    from lmdistill.models.build import build_student, load_teacher

    # no dropout; large initial weights so that logits (and so the losses) depend visibly on the input
    no_dropout = {**tiny_bert(), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 1.0}
    raw = run_config(tmp_path, tokenizer_dir, teacher={"config": no_dropout},
                     train={"max_steps": 1, "batch_size": 32, "log_every": 1, "progress": False})
    raw["data"]["mask_probability"] = 0.4
    config = parse_config(raw)
    teacher = load_teacher(config.teachers[0], model_class=get_task(config.task).model_class, seed=0)
    student = build_student(config.student, teacher, model_class=get_task(config.task).model_class, seed=0)
    task = get_task("sequence_classification")
    examples, _ = task.load_datasets(config.data, load_tokenizer(str(tokenizer_dir)), 0)
    # The order of the step's 32 rows is the engine's; its mean losses do not depend on it, but the draws do, so
    # rebuild the batch in the engine's order.
    from lmdistill.data.collate import batches_for_epoch

    order = batches_for_epoch(len(examples), 32, 0, 0)[0]
    batch = task.collate([examples[j] for j in order], 0)
    unmasked = dict(batch)
    draws = torch.rand(batch["input_ids"].shape, generator=torch.Generator().manual_seed(row_seed(0, 0, 0, 0)))
    ordinary = (batch["attention_mask"] == 1) & (batch["input_ids"] > MASK)  # the vocabulary's first 5 are special
    batch["input_ids"] = torch.where(ordinary & (draws < 0.4), MASK, batch["input_ids"])
    assert (batch["input_ids"] == MASK).sum() > 10
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        z_t, z_s = teacher(**inputs).logits.double(), student(**inputs).logits.double()
        z_s_unmasked = student(**{k: unmasked[k] for k in inputs}).logits.double()
    p_t = torch.softmax(z_t / 2.0, -1)
    soft_ce = float((-(p_t * torch.log_softmax(z_s / 2.0, -1)).sum(-1) * 4.0).mean())
    ce = float(-torch.log_softmax(z_s, -1)[torch.arange(32), batch["labels"]].mean())
    ce_unmasked = float(-torch.log_softmax(z_s_unmasked, -1)[torch.arange(32), unmasked["labels"]].mean())
    assert ce != pytest.approx(ce_unmasked, rel=1e-2)  # masking changes the step, so the check below means something
    distill(raw)
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert logged["loss/soft_ce"] == pytest.approx(soft_ce, rel=1e-5)
    assert logged["loss/ce"] == pytest.approx(ce, rel=1e-5)


def test_masking_mistakes_are_refused_at_load(tmp_path, tokenizer_dir):
    raw = run_config(tmp_path, tokenizer_dir)
    with pytest.raises(UserError, match="data.mask_probability does not apply to task causal_lm"):
        load_run_configs({**raw, "task": "causal_lm", "data": {**raw["data"], "mask_probability": 0.1}})
    with pytest.raises(UserError, match="needs a live teacher"):
        parse_config({**raw, "teacher": {"cache": str(tmp_path)}, "data": {**raw["data"], "mask_probability": 0.1}})
    with pytest.raises(UserError, match="mask_probability"):
        parse_config({**raw, "data": {**raw["data"], "mask_probability": 1.0}})
    config = parse_config({**raw, "data": {**raw["data"], "mask_probability": 0.1}})
    with pytest.raises(UserError, match="needs a tokenizer with a mask token"):
        MaskInputs(config.data.mask_probability, SimpleNamespace(mask_token_id=None, all_special_ids=[0]), config.seed)
