"""The seq2seq_lm task end to end: the tiny config trains from the CLI, the student reloads with
AutoModelForSeq2SeqLM and translates, `lmdistill eval` prints BLEU/chrF/TER/ROUGE/METEOR, and a resumed run ends
with the weights of an uninterrupted one. METEOR against nltk's own on hand cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM

from lmdistill.cli import main
from lmdistill.config import load_config
from lmdistill.train.loop import distill

from conftest import require_shared_data

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
SMALL = ["data.max_examples=16", "train.batch_size=4", "train.eval_every=4", "train.progress=false"]


@pytest.fixture
def in_repo(monkeypatch):
    require_shared_data("multi30k")
    require_shared_data("tokenizers")
    monkeypatch.chdir(REPO)  # the config names ../shared/data relative to the repo root


def test_tiny_config_trains_from_the_cli_and_the_student_reloads_evaluates_and_translates(tmp_path, in_repo, capsys):
    out = tmp_path / "run"
    code = main(["train", "--config", "configs/tiny-seq2seq.yaml", f"output_dir={out}", "train.max_steps=4", *SMALL])
    assert code == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in lines if row["split"] == "train"]
    assert {"loss/forward_kl", "loss/ce"} <= set(train_rows[-1])
    assert [row for row in lines if row["split"] == "eval"][-1]["eval/perplexity"] > 1

    student = AutoModelForSeq2SeqLM.from_pretrained(out / "student")
    assert (student.config.num_layers, student.config.num_decoder_layers) == (2, 2)
    from lmdistill.eval.seq2seq import generate_seq2seq
    from lmdistill.models.loading import load_tokenizer

    tokenizer = load_tokenizer(str(out / "student"))
    translations = generate_seq2seq(student, tokenizer, ["A dog runs.", "Two men play football."], max_new_tokens=8,
                                    source_prefix="translate English to German: ")
    assert len(translations) == 2 and all(isinstance(text, str) for text in translations)

    # The student against itself as the teacher: agreement 1, KL 0, BLEU against the teacher's outputs 100.
    capsys.readouterr()
    result = tmp_path / "eval.json"
    code = main(["eval", "--task", "seq2seq_lm", "--model", str(out / "student"), "--teacher", str(out / "student"),
                 "--data", "../shared/data/multi30k/test_2016_flickr.en.gz",
                 "--target-data", "../shared/data/multi30k/test_2016_flickr.de.gz",
                 "--source-prefix", "translate English to German: ", "--max-examples", "6", "--max-new-tokens", "6",
                 "--num-beams", "2", "--output", str(result)])
    assert code == 0
    printed = capsys.readouterr().out
    for column in ("BLEU", "chrF", "TER", "ROUGE-L", "METEOR", "beam 2 decoding"):
        assert column in printed
    rows = json.loads(result.read_text())["models"]
    assert set(rows) == {"teacher", "student"}
    assert rows["student"]["top1_agreement"] == 1.0 and rows["student"]["mean_token_kl"] == pytest.approx(0, abs=1e-6)
    assert rows["student"]["bleu"] == pytest.approx(rows["teacher"]["bleu"])
    for key in ("bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL", "meteor", "perplexity"):
        assert key in rows["student"]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_resumed_seq2seq_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, in_repo):
    def config(name):
        return load_config("configs/tiny-seq2seq.yaml", [f"output_dir={tmp_path / name}", "train.max_steps=4",
                                                          "train.save_every=2", "train.gradient_accumulation_steps=2",
                                                          "train.log_every=1", *SMALL])

    straight = distill(config("straight"))
    stopped = distill(config("resumed"), stop_after=2)
    assert stopped.stopped_early and stopped.steps == 2
    resumed = distill(config("resumed"), resume=True)
    assert resumed.steps == 4
    expected, actual = _weights(straight.student_dir), _weights(resumed.student_dir)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6)


def test_meteor_matches_nltk_and_the_formula_on_hand_cases():
    from lmdistill.eval.meteor import find_wordnet, meteor

    wordnet = find_wordnet()
    if wordnet is None:
        pytest.skip("WordNet 3.0 not installed (apt-get install wordnet-base); METEOR is skipped by design")
    from nltk.translate.meteor_score import meteor_score

    # Identical 6-word sentences: P = R = 1, one chunk, penalty 0.5·(1/6)^3.
    assert meteor(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1 - 0.5 / 6**3)
    # A WordNet synonym (car ~ auto) counts as a match: 4 matches, 1 chunk.
    assert meteor(["the car is red"], ["the auto is red"]) == pytest.approx(1 - 0.5 / 4**3)
    # Exact matches only: 3 of 4 words each way, Fmean = PR/(0.9P + 0.1R) = 0.75, chunks 1, penalty 0.5·(1/3)^3.
    assert meteor(["a dog runs home"], ["a dog runs away"]) == pytest.approx(0.75 * (1 - 0.5 / 27))
    # Reordered: the corpus value is the mean of nltk's sentence scores (punctuation split off, lower-cased).
    predictions, references = ["On the mat, the cat sat.", "Two dogs play."], ["The cat sat on the mat.", "Two dogs are playing."]
    by_nltk = [meteor_score([r.lower().replace(",", " ,").replace(".", " .").split()],
                            p.lower().replace(",", " ,").replace(".", " .").split(), wordnet=wordnet)
               for p, r in zip(predictions, references)]
    assert meteor(predictions, references) == pytest.approx(sum(by_nltk) / 2)


def test_meteor_without_wordnet_is_none_with_one_line(monkeypatch, tmp_path):
    from lmdistill.eval import meteor as module

    module.find_wordnet.cache_clear()
    monkeypatch.setattr(module, "DEBIAN_WORDNET", tmp_path / "absent")
    monkeypatch.setenv("LMDISTILL_WORDNET", str(tmp_path / "absent"))

    def not_found(*_args, **_kwargs):
        raise LookupError("no wordnet")

    monkeypatch.setattr("nltk.data.find", not_found)
    try:
        assert module.meteor(["a"], ["a"]) is None
        assert "\n" not in module.MISSING and "wordnet-base" in module.MISSING
    finally:
        module.find_wordnet.cache_clear()


def test_a_hidden_state_term_on_cross_attention_is_refused_with_one_line(tmp_path, in_repo, capsys):
    """Feature terms run on seq2seq (tests/test_seq2seq_features.py); a stack without hidden states is refused."""
    code = main(["train", "--config", "configs/tiny-seq2seq.yaml", f"output_dir={tmp_path / 'run'}",
                 "objective.1={name: hidden_mse, stack: cross}"])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "hidden_mse" in error[0] and "stack: cross applies to attention terms" in error[0]


def test_preflight_reads_parallel_files_and_counts_target_eos(in_repo):
    from lmdistill.preflight import run_preflight

    report = run_preflight(load_config("configs/tiny-seq2seq.yaml", ["data.max_examples=16"]))
    lines = {check.name: check for check in report.checks}
    assert not report.errors
    assert "16 of 16 targets end with EOS" in lines["pad/eos"].message
    assert lines["data"].message.startswith("16 train examples")


def test_on_policy_seq2seq_run_trains_on_the_students_samples(tmp_path, in_repo):
    raw_overrides = [f"output_dir={tmp_path / 'run'}", "train.max_steps=2", "on_policy.lmbda=1.0",
                     "on_policy.sampling.temperature=1.0", "on_policy.sampling.max_new_tokens=6", *SMALL]
    result = distill(load_config("configs/tiny-seq2seq.yaml", raw_overrides))
    assert result.steps == 2 and result.final_loss == result.final_loss  # finite
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
    assert rows and all(row["loss/forward_kl"] >= 0 for row in rows)
