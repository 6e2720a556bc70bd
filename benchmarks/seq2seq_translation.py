"""Sequence-to-sequence distillation on Multi30k en->de (or DialogSum summarisation): word-level KD, sequence-level KD
and seq-inter vs CE only.

No pretrained encoder-decoder model installs offline, so the benchmark makes its own teacher once and caches it under
``--work-dir``: a BPE tokenizer trained on Multi30k's English and German training sides (``tokenizers``), then a
BART-style teacher (``--family t5``: T5-style) trained with lmdistill itself (task seq2seq_lm, label terms only) on
the training pairs. The teacher run checkpoints every ``--save-every`` steps and a new start of the benchmark resumes it
from its last checkpoint, so its training can be spread over several runs (a GPU is used when one is available). Students take 2+2 layers from the
teacher (``--student-layers E+D``, e.g. 4+1: a deep encoder and a one-layer decoder; with ``--fresh`` also a fresh
student of that shape) and are trained with the same pairs, steps and schedule as:

- ``ce``: the references only;
- ``word_kd``: forward KL to the teacher's per-token distribution (+ CE on the references);
- ``seq_kd``: CE on the teacher's beam outputs for the training sources (Kim & Rush 2016);
- ``seq_inter``: CE on the references and the teacher's outputs together (both targets for every source).

Every finished piece (tokenizer, teacher, teacher outputs, each student run, each score) is cached in the work dir
and skipped on the next start. Students are scored with BLEU, chrF and METEOR on ``test_2016_flickr`` with greedy
and beam decoding; the section "Sequence-to-sequence distillation" of BENCHMARKS.md is rewritten with the table.

    nice -n 10 python benchmarks/seq2seq_translation.py --work-dir runs/bench-seq2seq

``--corpus dialogsum`` runs the same comparison on DialogSum dialogue -> summary (``../shared/data/dialogsum``):
the tokenizer and teacher are trained on its 12,460 training dialogues, sources cut at ``--max-source-length``
tokens, and the students are scored with ROUGE-1/2/L and METEOR against the test set's three reference summaries
(section "Summarisation distillation (DialogSum)").
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks_md import replace_section  # noqa: E402

from lmdistill.config import ParallelFiles, parse_config  # noqa: E402
from lmdistill.data.readers import read_parallel  # noqa: E402
from lmdistill.eval.seq2seq import generate_seq2seq  # noqa: E402
from lmdistill.eval.translation_metrics import generation_scores  # noqa: E402
from lmdistill.files import write_atomically  # noqa: E402
from lmdistill.models.loading import load_tokenizer  # noqa: E402
from lmdistill.train import checkpoint as ckpt  # noqa: E402
from lmdistill.train.loop import distill  # noqa: E402

SECTION = "## Sequence-to-sequence distillation"
SUMMARY_SECTION = "## Summarisation distillation (DialogSum)"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA = SHARED / "multi30k"
DIALOGSUM = SHARED / "dialogsum"
VARIANTS = ("ce", "word_kd", "seq_kd", "seq_inter")
log = logging.getLogger("seq2seq_translation")


@dataclass(frozen=True)
class Corpus:
    """Where a benchmark's pairs come from and how they are scored."""

    name: str
    section: str
    max_length: int  # source tokens
    max_target_length: int | None  # None: the run's default (max_length)
    metrics: tuple[str, ...]  # the table's score columns (keys of generation_scores)

    def train_pairs(self, count: int | None = None) -> list[dict]:
        if self.name == "multi30k":
            return read_parallel(_files("train"), max_examples=count)
        rows = [json.loads(line) for line in (DIALOGSUM / "dialogsum.train.from_2021-05_zip.jsonl").read_text().splitlines() if line.strip()]
        return [{"source": row["dialogue"], "target": row["summary"]} for row in rows[:count]]

    def test_set(self, count: int) -> tuple[list[str], list]:
        """Sources and references (DialogSum: the three reference summaries of each test dialogue)."""
        if self.name == "multi30k":
            pairs = read_parallel(_files("test_2016_flickr"), max_examples=count)
            return [pair["source"] for pair in pairs], [pair["target"] for pair in pairs]
        rows = [json.loads(line) for line in (DIALOGSUM / "dialogsum.test.jsonl").read_text().splitlines() if line.strip()][:count]
        return [row["dialogue"] for row in rows], [[row[f"summary{i}"] for i in (1, 2, 3)] for row in rows]

    def teacher_train(self, work: Path):
        """The teacher run's ``data.train``: Multi30k's parallel files; DialogSum's pairs as jsonl."""
        return _files("train").model_dump() if self.name == "multi30k" else str(references_file(work, None, self))


def corpus_named(name: str, max_source_length: int) -> Corpus:
    if name == "multi30k":
        return Corpus("multi30k", SECTION, 64, None, ("bleu", "chrf", "meteor"))
    return Corpus("dialogsum", SUMMARY_SECTION, max_source_length, 64, ("rouge1", "rouge2", "rougeL", "meteor"))


def train_tokenizer(work: Path, vocab_size: int, corpus: Corpus) -> Path:
    """A BPE tokenizer (Metaspace pre-tokenizer, so decoding restores spaces) on the training sources and targets
    (Multi30k: train.en + train.de); ``</s>`` ends every encoded text."""
    folder = work / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        return folder
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    lines = [record[side] for record in corpus.train_pairs() for side in ("source", "target")]
    tokenizer.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    wrapped.save_pretrained(folder)
    return folder


def _files(split: str) -> ParallelFiles:
    return ParallelFiles(source=str(DATA / f"{split}.en.gz"), target=str(DATA / f"{split}.de.gz"))


def model_config(args, layers: int, decoder_layers: int | None = None) -> dict:
    """A fresh ``layers``+``decoder_layers`` (default ``layers``) encoder-decoder of ``args.family``, width ``args.width``, feed-forward 4x.

    BART is the default: with AdamW, a fresh T5 (embeddings of std 1, tied head scaled by d_model**-0.5) learns far
    slower on Multi30k. At 4+4 layers, width 256, batch 32, lr 1e-3: train CE 6.1 against BART's 5.1 after 200 steps;
    a 3,000-step T5 teacher ended at CE 4.5 (greedy BLEU 2.8), which the BART teacher passed before step 700."""
    decoder_layers = layers if decoder_layers is None else decoder_layers
    if args.family == "t5":
        return {"model_type": "t5", "vocab_size": args.vocab_size, "d_model": args.width, "d_kv": args.width // 8,
                "d_ff": 4 * args.width, "num_layers": layers, "num_decoder_layers": decoder_layers, "num_heads": 8,
                "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0, "dropout_rate": 0.1}
    heads = args.width // 64
    return {"model_type": "bart", "vocab_size": args.vocab_size, "d_model": args.width, "encoder_layers": layers,
            "decoder_layers": decoder_layers, "encoder_attention_heads": heads, "decoder_attention_heads": heads,
            "encoder_ffn_dim": 4 * args.width, "decoder_ffn_dim": 4 * args.width,
            "max_position_embeddings": max(args.max_source_length, 128), "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 0, "decoder_start_token_id": 0, "forced_eos_token_id": 1,
            "dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0, "scale_embedding": True}


def run_config(args, work: Path, name: str, *, student: dict, train, objective, teacher: dict | None, steps: int,
               seed: int, max_examples: int | None, corpus: Corpus) -> dict:
    lengths = {"max_length": corpus.max_length} | ({"max_target_length": corpus.max_target_length} if corpus.max_target_length else {})
    return {"output_dir": str(work / name), "seed": seed, "task": "seq2seq_lm", "tokenizer": str(work / "tokenizer"),
            **({"teacher": teacher} if teacher else {}), "student": student,
            "data": {"train": train, **lengths, "max_examples": max_examples},
            "objective": objective,
            "train": {"max_steps": steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                      "warmup_steps": min(200, steps // 10), "log_every": 50, "save_every": args.save_every,
                      "keep_checkpoints": 1, "progress": False}}


def finished_run(raw: dict) -> Path:
    """Train (or resume) the run ``raw`` describes until all its steps are done; its student dir."""
    output = Path(raw["output_dir"])
    done = output / "DONE"
    if done.is_file():
        return output / "student"
    resume = ckpt.latest_checkpoint(output) is not None
    started = time.perf_counter()
    result = distill(parse_config(raw), resume=resume)
    if not result.stopped_early:
        write_atomically(done, json.dumps({"steps": result.steps, "final_loss": result.final_loss,
                                           "seconds_this_start": time.perf_counter() - started}))
    return result.student_dir


def teacher_outputs(work: Path, teacher_dir: Path, count: int, beams: int, corpus: Corpus) -> Path:
    """The teacher's beam outputs for the first ``count`` training sources, as jsonl {source, target}; generated in
    chunks appended to the file, so an interrupted start resumes after the last chunk written."""
    path = work / f"teacher_outputs_{count}_beam{beams}.jsonl"
    done = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    pairs = corpus.train_pairs(count)
    if len(done) >= len(pairs):
        return path
    from transformers import AutoModelForSeq2SeqLM

    tokenizer = load_tokenizer(str(teacher_dir))
    teacher = AutoModelForSeq2SeqLM.from_pretrained(teacher_dir).to(_device())
    for start in range(len(done), len(pairs), 512):
        chunk = [pair["source"] for pair in pairs[start:start + 512]]
        outputs = generate_seq2seq(teacher, tokenizer, chunk, max_new_tokens=64, num_beams=beams, batch_size=64,
                                   max_source_length=corpus.max_length)
        with path.open("a", encoding="utf-8") as stream:
            for source, target in zip(chunk, outputs):
                stream.write(json.dumps({"source": source, "target": target}, ensure_ascii=False) + "\n")
        log.info("teacher outputs: %d/%d", start + len(chunk), len(pairs))
    return path


def references_file(work: Path, count: int | None, corpus: Corpus) -> Path:
    path = work / f"references_{count or 'all'}.jsonl"
    if not path.is_file():
        rows = [json.dumps(pair, ensure_ascii=False) for pair in corpus.train_pairs(count)]
        write_atomically(path, "\n".join(rows) + "\n")
    return path


def scores_of(work: Path, name: str, model_dir: Path, test: tuple[list[str], list], beams: int, corpus: Corpus) -> dict:
    """Greedy and beam scores (BLEU/chrF/TER/ROUGE/METEOR) of a model dir on ``test`` (sources, references; cached
    per model), with ms per sentence."""
    path = work / "scores" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from transformers import AutoModelForSeq2SeqLM

    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(_device())
    sources, references = test
    result = {}
    for label, num_beams in (("greedy", 1), ("beam", beams)):
        started = time.perf_counter()
        outputs = generate_seq2seq(model, tokenizer, sources, max_new_tokens=64, num_beams=num_beams, batch_size=50,
                                   max_source_length=corpus.max_length)
        seconds = time.perf_counter() - started
        result[label] = {**generation_scores(outputs, references), "ms_per_sentence": 1000 * seconds / len(sources),
                         "example": outputs[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(result, indent=1, ensure_ascii=False))
    return result


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=["multi30k", "dialogsum"], default="multi30k")
    parser.add_argument("--max-source-length", type=int, default=256, help="DialogSum: source tokens kept (Multi30k: 64)")
    parser.add_argument("--work-dir", default="runs/bench-seq2seq")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--family", choices=["bart", "t5"], default="bart", help="the teacher's (and fresh students') architecture")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--teacher-layers", type=int, default=4)
    parser.add_argument("--teacher-steps", type=int, default=5000)
    parser.add_argument("--student-steps", type=int, default=1500)
    parser.add_argument("--student-pairs", type=int, default=29000, help="training pairs (and teacher outputs) the students use")
    parser.add_argument("--teacher-pairs", type=int, default=None, help="DialogSum: training pairs the teacher uses (default all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--student-layers", default="2+2", metavar="E+D",
                        help="encoder+decoder layers of the students, taken from the teacher's spread evenly (first and last "
                             "kept; one layer: the last), e.g. 4+1 for a deep encoder and a shallow, fast decoder")
    parser.add_argument("--fresh", action="store_true", help="also a fresh student of the same shape trained with CE and with word KD")
    parser.add_argument("--test-sentences", type=int, default=1000)
    parser.add_argument("--teacher-only", action="store_true", help="stop after the teacher (spread the work over starts)")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument("--report-only", action="store_true", help="train nothing more: report the runs finished so far")
    parser.add_argument("--note", default="", help="a paragraph appended to the section (e.g. why the scale is reduced)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (on shared cores, 1 was fastest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    corpus = corpus_named(args.corpus, args.max_source_length)

    with timed("tokenizer"):
        train_tokenizer(work, args.vocab_size, corpus)
    if args.report_only and not (work / "teacher" / "DONE").is_file():
        log.info("--report-only: the teacher has not finished; nothing to report")
        return
    label_only = [{"name": "ce", "weight": 1.0}]
    with timed("teacher training"):
        teacher_dir = finished_run(run_config(args, work, "teacher", student={"config": model_config(args, args.teacher_layers)},
                                              train=corpus.teacher_train(work), objective=label_only, teacher=None,
                                              steps=args.teacher_steps, seed=0, max_examples=args.teacher_pairs, corpus=corpus))
    if not (work / "teacher" / "DONE").is_file() or args.teacher_only:
        log.info("teacher not finished (or --teacher-only): start the benchmark again to go on")
        return
    test = corpus.test_set(args.test_sentences)
    with timed("scoring"):
        results = {"teacher": scores_of(work, "teacher", teacher_dir, test, args.beams, corpus)}

    references = references_file(work, args.student_pairs, corpus)
    outputs = work / f"teacher_outputs_{args.student_pairs}_beam{args.beams}.jsonl"
    if {"seq_kd", "seq_inter"} & set(args.variants) and not args.report_only:
        with timed("teacher beam outputs"):
            outputs = teacher_outputs(work, teacher_dir, args.student_pairs, args.beams, corpus)
    encoder_layers, decoder_layers = student_layers(args)
    pruned = {"from_teacher": {"encoder": {"layers": encoder_layers}, "decoder": {"layers": decoder_layers}}}
    fresh = {"config": model_config(args, len(encoder_layers), len(decoder_layers))}
    prefix = "" if args.student_layers == "2+2" else f"{args.student_layers}/"  # runs of other shapes beside the 2+2 ones
    teacher = {"path": str(teacher_dir)}
    word_kd = [{"name": "forward_kl", "weight": 0.5, "temperature": 1.0}, {"name": "ce", "weight": 0.5}]
    plans = {"ce": (pruned, str(references), label_only), "word_kd": (pruned, str(references), word_kd),
             "seq_kd": (pruned, str(outputs), label_only), "seq_inter": (pruned, [str(references), str(outputs)], label_only)}
    plans = {name: plans[name] for name in args.variants}
    if args.fresh:
        plans |= {"fresh_ce": (fresh, str(references), label_only), "fresh_word_kd": (fresh, str(references), word_kd)}
    # Seeds outer: a benchmark stopped part-way has every variant at the seeds it finished.
    for seed in args.seeds:
        for name, (student, train, objective) in plans.items():
            needs_teacher = objective is word_kd or "from_teacher" in student
            # seq_inter reads twice the pairs (references + teacher outputs): same number of steps and batches.
            count = 2 * args.student_pairs if name == "seq_inter" else args.student_pairs
            raw = run_config(args, work, f"students/{prefix}{name}-s{seed}", student=student, train=train, objective=objective,
                             teacher=teacher if needs_teacher else None, steps=args.student_steps, seed=seed,
                             max_examples=count, corpus=corpus)
            if args.report_only and not (Path(raw["output_dir"]) / "DONE").is_file():
                continue
            with timed("student training"):
                student_dir = finished_run(raw)
            with timed("scoring"):
                results[f"{name}-s{seed}"] = scores_of(work, f"{prefix}{name}-s{seed}", student_dir, test, args.beams, corpus)
    summary = summarise(results, list(plans), args.seeds)
    write_atomically(work / "results.json", json.dumps({"per_run": results, "summary": summary}, indent=1, ensure_ascii=False))
    text = markdown(args, summary, results, time.perf_counter() - started, corpus)
    print(text)
    if not args.no_write:
        replace_section(corpus.section, text)


def student_layers(args) -> tuple[list[int], list[int]]:
    """The teacher layers the students keep, encoder and decoder, from ``--student-layers E+D``."""
    try:
        counts = [int(count) for count in args.student_layers.split("+")]
    except ValueError:
        counts = []
    if len(counts) != 2 or not all(1 <= count <= args.teacher_layers for count in counts):
        raise SystemExit(f"--student-layers {args.student_layers}: give E+D, each 1..{args.teacher_layers} (e.g. 2+2 or 4+1)")
    last = args.teacher_layers - 1
    return tuple([last] if count == 1 else [round(i * last / (count - 1)) for i in range(count)] for count in counts)


def summarise(results: dict, variants: list[str], seeds: list[int]) -> dict:
    """Per variant and decoding: mean and spread (sample stdev) of BLEU, chrF, METEOR and ms per sentence over seeds."""
    summary = {}
    for name in variants:
        for decoding in ("greedy", "beam"):
            runs = [results[f"{name}-s{seed}"][decoding] for seed in seeds if f"{name}-s{seed}" in results]
            summary[f"{name}/{decoding}"] = {
                key: (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
                for key in ("bleu", "chrf", "meteor", "rouge1", "rouge2", "rougeL", "ms_per_sentence")
                if (values := [run[key] for run in runs if run.get(key) is not None])}
    return summary


LABELS = {"bleu": "BLEU", "chrf": "chrF", "meteor": "METEOR", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
SCALE = {"meteor": 100, "rouge1": 100, "rouge2": 100, "rougeL": 100}  # 0-1 scores shown as 0-100, like BLEU and chrF


def markdown(args, summary: dict, results: dict, seconds: float, corpus: Corpus) -> str:
    teacher = results["teacher"]
    command = (f"nice -n 10 python benchmarks/seq2seq_translation.py --corpus {corpus.name} --work-dir {args.work_dir} "
               f"--family {args.family} --vocab-size {args.vocab_size} --width {args.width} "
               f"--teacher-layers {args.teacher_layers} --teacher-steps {args.teacher_steps} "
               f"--student-steps {args.student_steps} --student-pairs {args.student_pairs} --batch-size {args.batch_size} "
               f"--learning-rate {args.learning_rate} --save-every {args.save_every} --threads {args.threads} "
               f"--beams {args.beams} --seeds {' '.join(map(str, args.seeds))} --test-sentences {args.test_sentences}"
               + (f" --max-source-length {args.max_source_length}" if corpus.name == "dialogsum" else "")
               + (f" --teacher-pairs {args.teacher_pairs}" if args.teacher_pairs else "")
               + (f" --student-layers {args.student_layers}" if args.student_layers != "2+2" else "")
               + (" --fresh" if args.fresh else ""))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{platform.machine()} CPU (2 shared cores)"
    if corpus.name == "multi30k":
        data = (f"BPE vocabulary {args.vocab_size} trained on Multi30k en+de, {args.teacher_steps} steps of batch "
                f"{args.batch_size} at learning rate {args.learning_rate} on the 29,000 training pairs")
        test = f"the first {args.test_sentences} sentences of test_2016_flickr"
    else:
        data = (f"BPE vocabulary {args.vocab_size} trained on DialogSum's training dialogues and summaries, "
                f"{args.teacher_steps} steps of batch {args.batch_size} on {args.teacher_pairs or 12460} training pairs, "
                f"sources cut at {corpus.max_length} tokens, summaries at {corpus.max_target_length}")
        test = f"the first {args.test_sentences} test dialogues against their three reference summaries"
    lines = [corpus.section, "", f"`{command}`; {device}, {datetime.now(timezone.utc):%Y-%m-%d}; this start took "
             f"{seconds / 60:.0f} min ({timings_line(args)}).", "",
             f"Teacher: {'BART' if args.family == 'bart' else 'T5'}-style {args.teacher_layers}+{args.teacher_layers} layers, "
             f"width {args.width}, {data}. "
             f"Students: {args.student_layers} layers (the teacher's encoder layers {student_layers(args)[0]} and decoder layers "
             f"{student_layers(args)[1]} unless `fresh`), {args.student_steps} "
             f"steps of batch {args.batch_size} on the first {args.student_pairs} pairs, the same for every variant; "
             f"scores on {test}, mean ± sample stdev over seeds {', '.join(map(str, args.seeds))} (scores 0-100); "
             f"speed-up = teacher ms per example / student ms per example (batch 50, same decoding).", "",
             "| model | decoding | " + " | ".join(LABELS[key] for key in corpus.metrics) + " | ms/example | speed-up |",
             "| --- | --- | " + " | ".join("---" for _ in corpus.metrics) + " | --- | --- |"]

    def cell(stats, key):
        if key not in stats:
            return "-"
        mean, spread = stats[key]
        return f"{mean * SCALE.get(key, 1):.2f} ± {spread * SCALE.get(key, 1):.2f}"

    for decoding in ("greedy", "beam"):
        row = teacher[decoding]
        scores = ["-" if row.get(key) is None else f"{row[key] * SCALE.get(key, 1):.2f}" for key in corpus.metrics]
        lines.append(f"| teacher | {decoding} | {' | '.join(scores)} | {row['ms_per_sentence']:.1f} | 1.00x |")
    for key, stats in summary.items():
        name, decoding = key.split("/")
        speed = teacher[decoding]["ms_per_sentence"] / stats["ms_per_sentence"][0] if "ms_per_sentence" in stats else float("nan")
        lines.append(f"| {name} | {decoding} | {' | '.join(cell(stats, metric) for metric in corpus.metrics)} | "
                     f"{cell(stats, 'ms_per_sentence')} | {speed:.2f}x |")
    lines += ["", *targets(summary, teacher, "bleu" if corpus.name == "multi30k" else "rougeL")]
    examples = [(name, results[name]["greedy"].get("example")) for name in ("teacher", *(f"{v}-s{args.seeds[0]}" for v in VARIANTS)) if name in results]
    if examples:
        lines += ["", f"First test {'sentence' if corpus.name == 'multi30k' else 'dialogue'}, greedy outputs:", ""]
        lines += [f"- `{name}`: {str(text)[:300]}" for name, text in examples]
    if args.note:
        lines += ["", args.note]
    return "\n".join(lines) + "\n"


TIMINGS: dict[str, float] = {}  # seconds this start spent in each part


@contextmanager
def timed(part: str):
    started = time.perf_counter()
    yield
    TIMINGS[part] = TIMINGS.get(part, 0.0) + time.perf_counter() - started


def timings_line(args) -> str:
    done = {part: seconds for part, seconds in TIMINGS.items() if seconds >= 1}
    return ", ".join(f"{part} {seconds / 60:.1f} min" for part, seconds in done.items()) or "everything cached"


def targets(summary: dict, teacher: dict, metric: str) -> list[str]:
    """The issue's targets, measured: best distilled student vs the reference-only (ce) student, greedy (>= +2 BLEU
    on Multi30k; DialogSum has no stated target, its ROUGE-L gap is reported), and its share of the teacher's greedy
    score (>= 90%) at its greedy speed-up (>= 2x)."""
    greedy = {key.split("/")[0]: stats for key, stats in summary.items() if key.endswith("/greedy") and metric in stats}
    distilled = {name: stats for name, stats in greedy.items() if name not in ("ce", "fresh_ce")}
    if "ce" not in greedy or not distilled:
        return ["Targets: not measured (the ce student or every distilled student is missing)."]
    scale = SCALE.get(metric, 1)
    best = max(distilled, key=lambda name: distilled[name][metric][0])
    gain = (distilled[best][metric][0] - greedy["ce"][metric][0]) * scale
    spread = max(distilled[best][metric][1], greedy["ce"][metric][1]) * scale
    share = distilled[best][metric][0] / teacher["greedy"][metric] if teacher["greedy"][metric] else float("nan")
    speed = teacher["greedy"]["ms_per_sentence"] / distilled[best]["ms_per_sentence"][0]
    verdict = lambda ok: "met" if ok else "not met"  # noqa: E731
    gain_target = f" (target >= +2: {verdict(gain >= 2)})" if metric == "bleu" else ""
    return [f"Targets (greedy): best distilled student `{best}` {gain:+.2f} {LABELS[metric]} over `ce`{gain_target}, "
            f"seed spread up to {spread:.2f}; it keeps {share:.0%} of the teacher's {LABELS[metric]} (target >= 90%: "
            f"{verdict(share >= 0.9)}) at {speed:.2f}x its decoding speed (target >= 2x: {verdict(speed >= 2)})."]


if __name__ == "__main__":
    main()
