"""Feature terms of seq2seq_lm on tiny random T5 and BART: hidden states of the encoder and the decoder, attention of
the encoder, the decoder and the cross-attention, each term against the models' own outputs computed by hand
(output_hidden_states; eager output_attentions), each stack with its own layer map, the stack setting's errors,
and a short CLI run with hidden and attention terms that finishes and changes the weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM, BartConfig, T5Config

from lmdistill.cli import main
from lmdistill.config import TermConfig, parse_config
from lmdistill.errors import UserError
from lmdistill.models import capture as attention_capture
from lmdistill.models.build import StudentBundle
from lmdistill.models.heads import run_without_head
from lmdistill.objective import Masks, build_terms, compute_terms, forward_features, needs_of
from lmdistill.tasks import check_config, get_task
from lmdistill.teachers import FusedTeacher, LiveTeacher

from conftest import require_shared_data

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 96
PAD, EOS = 0, 1
REPO = Path(__file__).resolve().parents[1]
# Sources and targets of different lengths, so padding sits on both sides and source and target lengths differ.
EXAMPLES = [{"input_ids": [5, 6, 7, 8, EOS], "labels": [9, 10, 11, EOS]},
            {"input_ids": [12, 13, EOS], "labels": [14, 15, 16, 17, 18, EOS]},
            {"input_ids": [19, 20, 21, 22, 23, 24, 25, EOS], "labels": [26, EOS]}]


def tiny(family: str, seed: int, encoder_layers: int, decoder_layers: int):
    torch.manual_seed(seed)
    if family == "t5":
        config = T5Config(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=encoder_layers,
                          num_decoder_layers=decoder_layers, num_heads=4, pad_token_id=PAD, eos_token_id=EOS,
                          decoder_start_token_id=PAD)
    else:
        config = BartConfig(vocab_size=VOCAB, d_model=16, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
                            max_position_embeddings=64, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=3,
                            decoder_start_token_id=2, forced_eos_token_id=None, init_std=0.3)
    return AutoModelForSeq2SeqLM.from_config(config).eval()


def pair(family: str):
    """Teacher 4 encoder + 3 decoder layers, student 2 + 1: every stack has its own depth."""
    return tiny(family, 0, 4, 3), tiny(family, 1, 2, 1)


def batch_for(student):
    task = get_task("seq2seq_lm")
    task.bind_model(student)
    return task, task.collate(EXAMPLES, PAD)


def masks_of(task, batch) -> Masks:
    """As the training step builds them (one micro-batch, one process)."""
    _, loss_mask = task.targets(batch)
    return Masks(loss=loss_mask, tokens=batch["attention_mask"].bool(), loss_count=loss_mask.sum().float(),
                 token_count=batch["attention_mask"].sum().float())


def terms_for(task, teacher, student, term_dicts):
    return build_terms([TermConfig(**term) for term in term_dicts], student_layers=task.stack_depths(student),
                       teacher_layers=task.stack_depths(teacher), stacks=task.feature_stacks)


def engine_values(task, teacher, student, batch, terms, *, fused: bool = False):
    needs = needs_of(terms)
    masks = masks_of(task, batch)
    targets, _ = task.targets(batch)
    if fused:
        student_features = forward_features(lambda **inputs: run_without_head(student, **inputs), batch, needs, task,
                                            grad=False, head_model=student)
        teacher_batch = FusedTeacher(teacher).batch(batch, [0, 1, 2], needs, task)
    else:
        student_features = forward_features(StudentBundle(student, {}), batch, needs, task, grad=False)
        teacher_batch = LiveTeacher(teacher).batch(batch, [0, 1, 2], needs, task)
    return compute_terms(terms, student_features, teacher_batch, targets, masks, None, 0.0)


def model_inputs(batch):
    return {key: batch[key] for key in ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")}


# --- the attention capture on encoder-decoder models ---------------------------------------------------------------

@pytest.mark.parametrize("family", ["t5", "bart"])
def test_capture_keeps_the_models_outputs_and_gives_each_stacks_attention_in_layer_order(family):
    """Captured scores, softmaxed, are the model's own eager attention probabilities, stack by stack; T5's relative
    position bias is part of them (the logits do not change when capture is on)."""
    model, _ = pair(family)
    _, batch = batch_for(model)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        reference = eager(**model_inputs(batch), output_attentions=True)
        attention_capture.enable_capture(model)
        with attention_capture.capture() as records:
            output = model(**model_inputs(batch))
    torch.testing.assert_close(output.logits, reference.logits, rtol=1e-5, atol=1e-5)
    stacks = records.by_stack()
    expected = {"encoder": reference.encoder_attentions, "decoder": reference.decoder_attentions,
                "cross": reference.cross_attentions}
    assert {name: len(captures) for name, captures in stacks.items()} == {"encoder": 4, "decoder": 3, "cross": 3}
    for name, probabilities in expected.items():
        for capture, reference_probabilities in zip(stacks[name], probabilities):
            torch.testing.assert_close(capture.scores.softmax(-1), reference_probabilities, rtol=1e-5, atol=1e-6)
    assert stacks["cross"][0].scores.shape[-2:] == (batch["labels"].shape[1], batch["input_ids"].shape[1])


# --- hidden-state terms -----------------------------------------------------------------------------------------------

def masked_hidden_mse_by_hand(student_states, teacher_states, mask, pairs) -> float:
    """Mean over layer pairs of: Σ over real positions of mean_H (h_s − h_t)², / number of real positions."""
    per_pair = []
    for s, t in pairs:
        squared = (student_states[s + 1].double() - teacher_states[t + 1].double()).pow(2).mean(-1)
        per_pair.append(float(squared[mask.bool()].sum() / mask.sum()))
    return sum(per_pair) / len(per_pair)


@pytest.mark.parametrize("family", ["t5", "bart"])
@pytest.mark.parametrize("fused", [False, True], ids=["dense", "fused"])
def test_hidden_mse_of_each_stack_is_the_mse_of_the_models_own_hidden_states_over_real_positions(family, fused):
    teacher, student = pair(family)
    task, batch = batch_for(student)
    terms = terms_for(task, teacher, student, [{"name": "hidden_mse", "stack": "encoder"},
                                               {"name": "hidden_mse", "stack": "decoder", "layers": [[-1, -1], [0, 1]]},
                                               {"name": "hidden_mse"}])  # unset: the decoder, uniform map
    values = engine_values(task, teacher, student, batch, terms, fused=fused)

    with torch.no_grad():  # the plain models (SDPA attention, no capture), hidden states as transformers returns them
        student_out = student(**model_inputs(batch), output_hidden_states=True)
        teacher_out = teacher(**model_inputs(batch), output_hidden_states=True)
    encoder = masked_hidden_mse_by_hand(student_out.encoder_hidden_states, teacher_out.encoder_hidden_states,
                                        batch["attention_mask"], [(0, 1), (1, 3)])  # uniform 2 -> 4
    decoder_explicit = masked_hidden_mse_by_hand(student_out.decoder_hidden_states, teacher_out.decoder_hidden_states,
                                                 batch["decoder_attention_mask"], [(-1, -1), (0, 1)])
    decoder_uniform = masked_hidden_mse_by_hand(student_out.decoder_hidden_states, teacher_out.decoder_hidden_states,
                                                batch["decoder_attention_mask"], [(0, 2)])  # uniform 1 -> 3
    assert float(values["hidden_mse"]) == pytest.approx(encoder, rel=1e-5)
    assert float(values["hidden_mse#2"]) == pytest.approx(decoder_explicit, rel=1e-5)
    assert float(values["hidden_mse#3"]) == pytest.approx(decoder_uniform, rel=1e-5)
    assert min(encoder, decoder_explicit, decoder_uniform) > 1e-3


# --- attention terms --------------------------------------------------------------------------------------------------

def attention_kl_by_hand(student_probabilities, teacher_probabilities, query_mask, pairs) -> float:
    """Mean over layer pairs of: mean over real queries of the mean over heads of Σ_k p_t·(log p_t − log p_s), keys
    where the teacher's probability is 0 (masked: padding, future) left out."""
    per_pair = []
    for s, t in pairs:
        p_s, p_t = student_probabilities[s].double(), teacher_probabilities[t].double()
        terms = torch.where(p_t > 0, p_t * (p_t.log() - p_s.log()), torch.zeros_like(p_t))
        per_query = terms.sum(-1).mean(1)  # (B, Q)
        per_pair.append(float(per_query[query_mask.bool()].sum() / query_mask.sum()))
    return sum(per_pair) / len(per_pair)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_attention_kl_of_each_stack_is_the_kl_of_the_models_eager_attention_probabilities(family):
    teacher, student = pair(family)
    task, batch = batch_for(student)
    references = {}
    for side, model in (("student", student), ("teacher", teacher)):
        eager = copy.deepcopy(model)
        eager.set_attn_implementation("eager")
        with torch.no_grad():
            references[side] = eager(**model_inputs(batch), output_attentions=True)
    attention_capture.enable_capture(student)
    attention_capture.enable_capture(teacher)
    terms = terms_for(task, teacher, student, [{"name": "attention_kl", "stack": "encoder"},
                                               {"name": "attention_kl", "stack": "decoder", "layers": [[0, 1]]},
                                               {"name": "attention_kl", "stack": "cross"}])
    values = engine_values(task, teacher, student, batch, terms)

    source_mask, target_mask = batch["attention_mask"], batch["decoder_attention_mask"]
    expected = {
        "attention_kl": attention_kl_by_hand(references["student"].encoder_attentions,
                                             references["teacher"].encoder_attentions, source_mask, [(0, 1), (1, 3)]),
        "attention_kl#2": attention_kl_by_hand(references["student"].decoder_attentions,
                                               references["teacher"].decoder_attentions, target_mask, [(0, 1)]),
        "attention_kl#3": attention_kl_by_hand(references["student"].cross_attentions,
                                               references["teacher"].cross_attentions, target_mask, [(0, 2)]),
    }
    for label, value in expected.items():
        assert float(values[label]) == pytest.approx(value, rel=1e-4), label
        assert value > 1e-3, label


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_every_attention_loss_runs_on_each_stack_it_applies_to_and_is_zero_against_itself(family):
    teacher, _ = pair(family)
    task, batch = batch_for(teacher)
    attention_capture.enable_capture(teacher)
    term_dicts = [{"name": name, "stack": stack} for stack in ("encoder", "decoder") for name in
                  ("attention_kl", "attention_mse", "minilm", "minilm_v2")]
    term_dicts += [{"name": name, "stack": "cross"} for name in ("attention_kl", "attention_mse")]
    terms = terms_for(task, teacher, teacher, term_dicts)
    values = engine_values(task, teacher, copy.deepcopy(teacher), batch, terms)
    assert len(values) == len(term_dicts)
    for label, value in values.items():
        assert float(value) == pytest.approx(0.0, abs=1e-6), label


# --- layer maps and settings ------------------------------------------------------------------------------------------

def test_each_stack_resolves_its_layer_map_against_its_own_depth():
    teacher, student = pair("t5")  # teacher 4 + 3, student 2 + 1
    task = get_task("seq2seq_lm")
    assert task.stack_depths(teacher) == {"encoder": 4, "decoder": 3, "cross": 3}
    terms = terms_for(task, teacher, student, [
        {"name": "hidden_mse", "stack": "encoder"}, {"name": "hidden_mse", "stack": "decoder"},
        {"name": "attention_kl", "stack": "cross", "layers": "last"}, {"name": "hidden_cosine"},
        {"name": "attention_mse"}, {"name": "minilm_v2", "stack": "encoder", "layers": [[1, 2]]}])
    assert [(term.stack, term.layer_pairs) for term in terms] == [
        ("encoder", [(0, 1), (1, 3)]), ("decoder", [(0, 2)]), ("cross", [(0, 2)]), ("decoder", [(0, 2)]),
        ("decoder", [(0, 2)]), ("encoder", [(1, 2)])]
    # Masks: encoder on source tokens; decoder on decoder positions; cross queries decoder positions over source keys.
    assert [(term.positions, term.keys) for term in terms[:3]] == [("tokens", "tokens"), ("loss", "loss"), ("loss", "tokens")]

    with pytest.raises(UserError, match=r"hidden_mse: layer pair \[1, 2\] out of range; the student's decoder has "
                                        r"layers -1..0 and the teacher's decoder -1..2"):
        terms_for(task, teacher, student, [{"name": "hidden_mse", "layers": [[1, 2]]}])  # fine for the encoder
    with pytest.raises(UserError, match=r"attention_kl: the student's encoder has 4 layers, more than the teacher's encoder \(2\)"):
        terms_for(task, student, teacher, [{"name": "attention_kl", "stack": "encoder"}])


def test_decoder_positions_are_the_loss_positions_in_collation():
    """The decoder terms normalise by the loss mask: it is the decoder_attention_mask exactly."""
    _, student = pair("bart")
    task, batch = batch_for(student)
    assert torch.equal(task.targets(batch)[1], batch["decoder_attention_mask"].bool())


def _seq2seq_raw(objective):
    return {"output_dir": "unused", "task": "seq2seq_lm", "teacher": {"config": {"model_type": "t5"}},
            "student": {"from_teacher": {"encoder": {"layers": [0]}}}, "data": {"train": "pairs.jsonl"},
            "objective": objective, "train": {"max_steps": 1}}


@pytest.mark.parametrize("term, message", [
    ({"name": "forward_kl", "stack": "encoder"}, "forward_kl is a logits term; `stack` applies to hidden/attention terms only"),
    ({"name": "hidden_mse", "stack": "cross"}, "hidden states belong to the encoder or the decoder"),
    ({"name": "minilm_v2", "stack": "cross"}, "cross-attention's queries and keys are two sequences"),
    ({"name": "attention_kl", "stack": "middle"}, "objective.0.stack: Input should be 'encoder', 'decoder' or 'cross'"),
])
def test_a_bad_stack_is_a_one_line_error_at_config_load(term, message):
    with pytest.raises(UserError, match=message) as error:
        parse_config(_seq2seq_raw([term]))
    assert "\n" not in str(error.value)


def test_a_stack_the_tasks_models_do_not_have_is_a_one_line_error_naming_the_valid_ones():
    causal = parse_config({**_seq2seq_raw([{"name": "hidden_mse", "stack": "encoder"}]), "task": "causal_lm",
                           "student": {"from_teacher": {"layers": [0]}}, "data": {"train": "a.txt"}})
    with pytest.raises(UserError, match="task causal_lm's models have one layer stack; remove stack: encoder"):
        check_config(get_task("causal_lm"), causal)
    seq2seq = parse_config(_seq2seq_raw([{"name": "attention_kl", "stack": "cross"}, {"name": "hidden_mse"}]))
    check_config(get_task("seq2seq_lm"), seq2seq)  # every stack named exists


def test_the_cli_refuses_a_bad_stack_with_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["train", "--config", "configs/tiny-causal.yaml", "objective.0={name: hidden_mse, stack: decoder}"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "one layer stack; remove stack: decoder" in err


# --- training end to end ----------------------------------------------------------------------------------------------

def test_tiny_seq2seq_config_trains_with_hidden_and_attention_terms_of_every_stack_and_changes_the_weights(tmp_path, monkeypatch):
    require_shared_data("multi30k")
    require_shared_data("tokenizers")
    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    objective = ("objective=[{name: forward_kl, weight: 0.5, temperature: 2.0}, {name: ce, weight: 0.5}, "
                 "{name: hidden_mse, weight: 1.0, stack: encoder}, {name: hidden_mse, weight: 1.0}, "
                 "{name: attention_kl, weight: 1.0, stack: encoder}, {name: attention_kl, weight: 1.0, stack: cross}, "
                 "{name: attention_mse, weight: 0.01, stack: decoder, layers: last}]")
    code = main(["train", "--config", "configs/tiny-seq2seq.yaml", f"output_dir={out}", "train.max_steps=3",
                 "data.max_examples=12", "train.batch_size=4", "train.eval_every=3", "train.save_every=3",
                 "train.log_every=1", "train.progress=false", objective])
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if row["split"] == "train"]
    labels = ("loss/hidden_mse", "loss/hidden_mse#2", "loss/attention_kl", "loss/attention_kl#2", "loss/attention_mse")
    for label in labels:
        assert all(0 < row[label] < float("inf") for row in train_rows), label

    # The student starts as the teacher's layers 0 and 3 of each stack (fresh teacher weights from the config, seed 0).
    from lmdistill.config import load_config
    from lmdistill.models.build import load_teacher
    from lmdistill.models.pruning import seq2seq_student_from_teacher

    config = load_config("configs/tiny-seq2seq.yaml")
    teacher = load_teacher(config.teacher, model_class=AutoModelForSeq2SeqLM, seed=config.seed)
    initial = seq2seq_student_from_teacher(teacher, {"encoder": [0, 3], "decoder": [0, 3]}).state_dict()
    trained = load_file(str(out / "student" / "model.safetensors"))
    for prefix in ("encoder.block.0.", "encoder.block.1.", "decoder.block.0.", "decoder.block.1."):
        names = [name for name in trained if name.startswith(prefix) and name.endswith("q.weight")]
        assert names, prefix
        for name in names:
            assert not torch.allclose(trained[name], initial[name]), name


def test_the_hf_trainer_integration_gives_the_engines_seq2seq_feature_terms(tmp_path):
    from lmdistill.integrations import DistillationTrainer, DistillationTrainingArguments

    teacher, student = pair("t5")
    task, batch = batch_for(student)
    objective = [{"name": "forward_kl"}, {"name": "hidden_mse", "stack": "encoder"}, {"name": "hidden_mse"},
                 {"name": "attention_kl", "stack": "cross"}]
    args = DistillationTrainingArguments(output_dir=str(tmp_path), objective=objective, task="seq2seq_lm",
                                         report_to="none", use_cpu=True, remove_unused_columns=False, disable_tqdm=True)
    trainer = DistillationTrainer(model=copy.deepcopy(student), teacher_model=copy.deepcopy(teacher), args=args)
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model.eval(), dict(batch))
    attention_capture.enable_capture(student)
    attention_capture.enable_capture(teacher)
    values = engine_values(task, teacher, student, batch, terms_for(task, teacher, student, objective))
    assert float(loss) == pytest.approx(float(sum(values.values())), rel=1e-6)
