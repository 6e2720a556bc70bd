"""The seq2seq_lm task on tiny random T5 and BART models: data (parallel files, prefix, truncation), collation the
model's way, decoder-position KL by hand, every logit divergence dense vs fused, encoder/decoder pruning."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, BartConfig, T5Config

from lmdistill.losses.cross_vocab import CROSS_VOCAB_LOSSES
from lmdistill.config import DataConfig, ParallelFiles
from lmdistill.data.readers import read_records
from lmdistill.data.seq2seq import build_seq2seq_examples, load_seq2seq_datasets
from lmdistill.errors import UserError
from lmdistill.losses import IGNORE_INDEX, names, spec
from lmdistill.models.build import StudentBundle
from lmdistill.models.pruning import seq2seq_layer_lists, seq2seq_student_from_teacher
from lmdistill.objective import Masks, Needs, compute_terms, forward_features
from lmdistill.objective.terms import Term
from lmdistill.tasks import get_task
from lmdistill.teachers import FusedTeacher, LiveTeacher

from conftest import require_shared_data

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 96
PAD, EOS, BART_START = 0, 1, 2


def tiny_t5(seed: int, layers: int = 4, **overrides):
    torch.manual_seed(seed)
    config = T5Config(vocab_size=VOCAB, d_model=16, d_kv=4, d_ff=32, num_layers=layers, num_decoder_layers=layers,
                      num_heads=4, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, **overrides)
    return AutoModelForSeq2SeqLM.from_config(config).eval()


def tiny_bart(seed: int, layers: int = 4):
    torch.manual_seed(seed)
    config = BartConfig(vocab_size=VOCAB, d_model=16, encoder_layers=layers, decoder_layers=layers,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_position_embeddings=64, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=3,
                        decoder_start_token_id=BART_START, forced_eos_token_id=None)
    model = AutoModelForSeq2SeqLM.from_config(config).eval()
    model.final_logits_bias.normal_()  # zero at init: make it count, the fused path must add it
    return model


EXAMPLES = [{"input_ids": [5, 6, 7, 8, EOS], "labels": [9, 10, 11, EOS]},
            {"input_ids": [12, 13, EOS], "labels": [14, 15, 16, 17, 18, EOS]},
            {"input_ids": [19, 20, 21, 22, 23, 24, 25, EOS], "labels": [26, EOS]}]


def batch_for(model):
    task = get_task("seq2seq_lm")
    task.bind_model(model)
    return task, task.collate(EXAMPLES, PAD)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_decoder_inputs_are_the_labels_shifted_behind_the_models_start_token(family):
    model = tiny_t5(0) if family == "t5" else tiny_bart(0)
    start = PAD if family == "t5" else BART_START
    _, batch = batch_for(model)
    for row, example in enumerate(EXAMPLES):
        target = example["labels"]
        width = batch["labels"].shape[1]
        expected = [start] + target + [PAD] * (width - len(target))  # -100 padding becomes pad
        assert batch["decoder_input_ids"][row].tolist() == expected[:width]
        assert batch["labels"][row].tolist() == target + [IGNORE_INDEX] * (width - len(target))
        assert batch["decoder_attention_mask"][row].tolist() == [1] * len(target) + [0] * (width - len(target))
        assert batch["attention_mask"][row].sum() == len(example["input_ids"])


def test_forward_kl_is_the_mean_over_target_positions_by_hand():
    teacher, student = tiny_t5(0), tiny_t5(1, layers=2)
    task, batch = batch_for(student)
    temperature = 2.0
    needs = Needs(logits=True, hidden_states=False, attentions=False, teacher=True)
    teacher_batch = LiveTeacher(teacher).batch(batch, [0, 1, 2], needs, task)
    features = forward_features(student, batch, needs, task, grad=False)
    targets, loss_mask = task.targets(batch)
    masks = Masks(loss=loss_mask, tokens=batch["attention_mask"].bool(), loss_count=loss_mask.sum(), token_count=1.0)
    term = Term(label="forward_kl", name="forward_kl", kind="logits", weight=1.0, params={"temperature": temperature})
    value = compute_terms([term], features, teacher_batch, targets, masks, None, 0.0)["forward_kl"]

    # By hand: each pair alone through the models' plain forward, decoder fed [start] + target[:-1].
    total, count = 0.0, 0
    for example in EXAMPLES:
        source = torch.tensor([example["input_ids"]])
        decoder = torch.tensor([[PAD] + example["labels"][:-1]])
        with torch.no_grad():
            s = student(input_ids=source, decoder_input_ids=decoder).logits[0].double() / temperature
            t = teacher(input_ids=source, decoder_input_ids=decoder).logits[0].double() / temperature
        for position in range(len(example["labels"])):
            p_t = t[position].softmax(-1)
            total += float((p_t * (p_t.log() - s[position].log_softmax(-1))).sum()) * temperature**2
            count += 1
    assert count == int(loss_mask.sum())
    assert float(value) == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_every_logit_divergence_and_ce_agree_between_dense_and_fused_decoder_logits(family):
    build = tiny_t5 if family == "t5" else tiny_bart
    teacher, student = build(0), build(1, layers=2)
    task, batch = batch_for(student)
    needs = Needs(logits=True, hidden_states=False, attentions=False, teacher=True)
    targets, loss_mask = task.targets(batch)
    masks = Masks(loss=loss_mask, tokens=batch["attention_mask"].bool(), loss_count=loss_mask.sum(), token_count=1.0)
    # uld / gold_hybrid compare distributions across vocabularies: no fused version (the fused teacher refuses them).
    divergences = [name for name in names() if spec(name).kind == "logits" and name not in {"adaptive_kl", *CROSS_VOCAB_LOSSES}]
    terms = [Term(label=name, name=name, kind=spec(name).kind, weight=1.0, params={"temperature": 1.5} if "kl" in name or name in ("jsd", "soft_ce", "tvd") else {})
             for name in divergences]
    terms.append(Term(label="ce", name="ce", kind="labels", weight=1.0, params={}))
    bundle = StudentBundle(student, {})
    dense = compute_terms(terms, forward_features(bundle, batch, needs, task, grad=False),
                          LiveTeacher(teacher).batch(batch, [0, 1, 2], needs, task), targets, masks, None, 0.0)
    fused_student = forward_features(lambda **inputs: bundle(without_head=True, **inputs), batch, needs, task, grad=False,
                                     head_model=student)
    assert fused_student.logits is None and fused_student.last_hidden is not None  # really the fused path
    fused = compute_terms(terms, fused_student, FusedTeacher(teacher).batch(batch, [0, 1, 2], needs, task), targets,
                          masks, None, 0.0)
    assert set(dense) == set(fused)
    for label in dense:
        assert float(fused[label].detach()) == pytest.approx(float(dense[label]), rel=1e-4, abs=1e-6), label
    assert float(dense["forward_kl"]) > 0


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_pruned_student_keeps_the_chosen_encoder_and_decoder_layers_with_the_teachers_weights(family):
    teacher = tiny_t5(0) if family == "t5" else tiny_bart(0)
    student = seq2seq_student_from_teacher(teacher, {"encoder": [1, 3], "decoder": [0, 2, 3]})
    teacher_stacks, student_stacks = seq2seq_layer_lists(teacher), seq2seq_layer_lists(student)
    assert len(student_stacks["encoder"]) == 2 and len(student_stacks["decoder"]) == 3
    for side, kept in (("encoder", [1, 3]), ("decoder", [0, 2, 3])):
        for new_index, old_index in enumerate(kept):
            new_state = student_stacks[side][new_index].state_dict()
            old_state = teacher_stacks[side][old_index].state_dict()
            for name, tensor in new_state.items():
                if "relative_attention_bias" in name and old_index != 0:
                    continue  # T5: the new first block holds the teacher's position-bias table (checked below)
                torch.testing.assert_close(tensor, old_state[name], rtol=0, atol=0)
    if family == "t5":
        assert student.config.num_layers == 2 and student.config.num_decoder_layers == 3
        bias = student_stacks["encoder"][0].layer[0].SelfAttention.relative_attention_bias.weight
        torch.testing.assert_close(bias, teacher_stacks["encoder"][0].layer[0].SelfAttention.relative_attention_bias.weight)
    else:
        assert student.config.encoder_layers == 2 and student.config.decoder_layers == 3
    # The pruned model runs, saves and reloads as the same architecture.
    _, batch = batch_for(student)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    assert student(**inputs).logits.shape == (3, batch["labels"].shape[1], VOCAB)


def test_parallel_files_give_pairs_with_prefix_eos_and_counted_truncation(tmp_path, llama_spm_tokenizer):
    with gzip.open(tmp_path / "train.en.gz", "wt") as stream:
        stream.write("A dog runs.\nTwo men are playing football in a very large green park today.\n\n")
    (tmp_path / "train.de").write_text("Ein Hund rennt.\nZwei Männer spielen Fußball.\n\n", encoding="utf-8")
    files = ParallelFiles(source=str(tmp_path / "train.en.gz"), target=str(tmp_path / "train.de"))
    records = read_records(files)
    assert records[:2] == [{"source": "A dog runs.", "target": "Ein Hund rennt."},
                           {"source": "Two men are playing football in a very large green park today.",
                            "target": "Zwei Männer spielen Fußball."}]
    assert records[2] == {"source": "", "target": ""}  # an empty pair is kept as a record and dropped at tokenisation
    data = DataConfig(train=files, source_prefix="translate English to German: ", max_length=12, max_target_length=6)
    examples, stats = build_seq2seq_examples(records, llama_spm_tokenizer, data)
    tokenizer, eos = llama_spm_tokenizer, llama_spm_tokenizer.eos_token_id
    full_source = tokenizer("translate English to German: A dog runs.")["input_ids"]
    assert full_source[-1] != eos  # Llama's tokenizer adds BOS only: a long source is cut plainly
    assert examples[0]["input_ids"] == full_source[:12]
    target = tokenizer(text_target="Ein Hund rennt.")["input_ids"] + [eos]
    assert len(target) > 6 and examples[0]["labels"] == target[:5] + [eos]  # a cut target keeps its EOS
    assert all(len(e["input_ids"]) <= 12 and len(e["labels"]) <= 6 and e["labels"][-1] == eos for e in examples)
    long_source = len(tokenizer("translate English to German: " + records[1]["source"])["input_ids"])
    assert stats.truncated_sources == sum(n > 12 for n in (len(full_source), long_source))
    assert stats.dropped == 1 and stats.examples == 2
    assert "1 dropped" in stats.describe("train")


def test_unequal_parallel_files_and_missing_fields_are_one_line_errors(tmp_path, llama_spm_tokenizer):
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "b.txt").write_text("eins\n")
    with pytest.raises(UserError, match="differ in length"):
        read_records(ParallelFiles(source=str(tmp_path / "a.txt"), target=str(tmp_path / "b.txt")))
    (tmp_path / "pairs.jsonl").write_text('{"en": "a", "de": "b"}\n')
    with pytest.raises(UserError, match="data.source_field"):
        load_seq2seq_datasets(DataConfig(train=str(tmp_path / "pairs.jsonl")), llama_spm_tokenizer, 0)
    train, _ = load_seq2seq_datasets(DataConfig(train=str(tmp_path / "pairs.jsonl"), source_field="en", target_field="de"),
                                     llama_spm_tokenizer, 0)
    assert len(train) == 1


def test_multi30k_parallel_files_read_line_by_line(llama_spm_tokenizer):
    folder = require_shared_data("multi30k")
    records = read_records(ParallelFiles(source=str(folder / "val.en.gz"), target=str(folder / "val.de.gz")))
    assert len(records) == 1014
    assert records[0]["source"].startswith("A group of men") and records[0]["target"].startswith("Eine Gruppe von Männern")


@pytest.fixture(scope="module")
def llama_spm_tokenizer():
    from lmdistill.models.loading import load_tokenizer

    return load_tokenizer(str(require_shared_data("tokenizers", "ggml-vocab-llama-spm.gguf")))


class IdsTokenizer:
    """A stand-in tokenizer whose 'texts' are space-separated token ids (the generation test needs no vocabulary)."""

    pad_token_id, eos_token_id, all_special_ids = PAD, EOS, [PAD, EOS]

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[int(token) for token in text.split()] + [EOS] for text in texts]}


def test_generation_starts_from_the_decoder_start_token_with_nothing_to_strip():
    from lmdistill.eval.seq2seq import generate_seq2seq_ids

    model = tiny_t5(3)
    sources = ["5 6 7 8", "9 10", "11 12 13 14 15 16"]
    generated = generate_seq2seq_ids(model, IdsTokenizer(), sources, max_new_tokens=6, batch_size=2)
    # By hand: greedy argmax one token at a time from [decoder_start], each source alone (no padding).
    with torch.no_grad():
        for source, ids in zip(sources, generated):
            encoder_ids = torch.tensor([[int(t) for t in source.split()] + [EOS]])
            decoded = [PAD]
            while len(decoded) <= 6:
                next_token = int(model(input_ids=encoder_ids, decoder_input_ids=torch.tensor([decoded])).logits[0, -1].argmax())
                decoded.append(next_token)
                if next_token == EOS:
                    break
            assert ids == decoded[1:]


def test_generate_with_an_encoder_decoder_teacher_writes_whole_targets_greedy_and_beam(tmp_path):
    """`lmdistill generate` on a random T5 teacher: each row's completion is the decoder's output from its start token
    (nothing to strip), greedy as decoded by hand, beam as transformers' own beam search."""
    from lmdistill.data.generate import generate_pseudo_data
    from lmdistill.data.generate_config import parse_generate_config
    from lmdistill.models.loading import load_tokenizer, model_from_config

    tokenizer_path = str(require_shared_data("tokenizers", "ggml-vocab-llama-spm.gguf"))
    tokenizer = load_tokenizer(tokenizer_path)
    t5 = {"model_type": "t5", "vocab_size": 32000, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 2,
          "num_decoder_layers": 2, "num_heads": 4, "pad_token_id": 2, "eos_token_id": 2, "decoder_start_token_id": 2}
    sources = ["A dog runs in the park.", "Two men play football.", "A woman reads."]
    (tmp_path / "sources.jsonl").write_text("".join(json.dumps({"source": s}) + "\n" for s in sources))
    teacher = model_from_config(t5, model_class=AutoModelForSeq2SeqLM, seed=0).eval()
    for name, sampling in (("greedy", {"temperature": 0, "max_new_tokens": 5, "batch_size": 2}),
                           ("beam", {"temperature": 0, "num_beams": 3, "max_new_tokens": 5, "batch_size": 2})):
        config = parse_generate_config({"teacher": {"config": t5}, "tokenizer": tokenizer_path,
                                        "prompts": {"source": str(tmp_path / "sources.jsonl"), "prompt_field": "source"},
                                        "sampling": sampling, "output": str(tmp_path / f"{name}.jsonl")})
        generate_pseudo_data(config)
        rows = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert [row["prompt"] for row in rows] == sources
        for row, source in zip(rows, sources):
            encoder_ids = torch.tensor([tokenizer(source)["input_ids"]])
            with torch.no_grad():
                if name == "greedy":
                    decoded = [2]
                    while len(decoded) <= 5:
                        decoded.append(int(teacher(input_ids=encoder_ids, decoder_input_ids=torch.tensor([decoded])).logits[0, -1].argmax()))
                        if decoded[-1] == 2:
                            break
                else:
                    decoded = teacher.generate(input_ids=encoder_ids, num_beams=3, max_new_tokens=5, do_sample=False,
                                               pad_token_id=2, eos_token_id=2)[0].tolist()
            ids = [token for token in decoded[1:] if token != 2]
            assert row["completion"] == tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_rollout_replaces_targets_with_the_students_greedy_outputs_and_rebuilds_decoder_inputs():
    from types import SimpleNamespace

    from lmdistill.config import SamplingConfig
    from lmdistill.eval.seq2seq import generate_seq2seq_ids

    student = tiny_t5(4)
    task, batch = batch_for(student)
    tokenizer = SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS)
    rolled = task.rollout(student, [batch], tokenizer=tokenizer, sampling=SamplingConfig(temperature=0, max_new_tokens=5),
                          row_seeds=[list(range(batch["input_ids"].shape[0]))])[0]
    sources = [" ".join(map(str, example["input_ids"][:-1])) for example in EXAMPLES]
    expected = generate_seq2seq_ids(student, IdsTokenizer(), sources, max_new_tokens=5)  # checked by hand above
    for row, ids in enumerate(expected):
        width = rolled["labels"].shape[1]
        assert rolled["labels"][row].tolist() == ids + [IGNORE_INDEX] * (width - len(ids))
        assert rolled["decoder_attention_mask"][row].tolist() == [1] * len(ids) + [0] * (width - len(ids))
    torch.testing.assert_close(rolled["decoder_input_ids"], student.prepare_decoder_input_ids_from_labels(labels=rolled["labels"]))
    assert torch.equal(rolled["input_ids"], batch["input_ids"])  # the sources stay
