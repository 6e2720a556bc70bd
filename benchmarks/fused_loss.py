"""Benchmark the fused large-vocabulary divergence against naive, matmul-only, Liger-Kernel and TRL, on CPU.

Each (method, divergence) runs forward + backward in a fresh subprocess (the matmul bound and the fused loss
--rounds times, interleaved, compared round by round), so the peak RSS is its own; the
reported memory is peak RSS minus the RSS right after the inputs were created. Prints a Markdown table and, with
``--write``, replaces the "## Fused large-vocabulary divergence" section of BENCHMARKS.md.

    .venv/bin/python benchmarks/fused_loss.py [--write] [--tokens 2048 --hidden 896 --vocab 151936]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks_md import replace_section

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Fused large-vocabulary divergence"
THREADS = 2
DIVERGENCES = {"forward_kl": {}, "jsd(beta=0.5)": {"beta": 0.5}}
# The anchors run on the two above; the rest of the fused kernels are timed against the bound only.
BOUND_ONLY_DIVERGENCES = {"reverse_kl": {}, "tvd": {}, "skew_forward_kl(alpha=0.1)": {"alpha": 0.1},
                          "skew_reverse_kl(alpha=0.1)": {"alpha": 0.1}}
ALL_DIVERGENCES = {**DIVERGENCES, **BOUND_ONLY_DIVERGENCES}
METHODS = ["naive", "matmul_bound", "fused", "liger", "trl"]
METHOD_LABELS = {
    "naive": "(a) naive: full logits + `get(name)` + `reduce`",
    "matmul_bound": "(b) matmul-only bound (3 products)",
    "fused": "(ours) `fused_linear_divergence`",
    "liger": "(c) Liger `LigerFusedLinearJSDLoss` (compiled=False)",
    "trl": "(d) TRL `_chunked_divergence_loss`",
}


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:  # Linux >= 4.0: writing 5 resets VmHWM to the current RSS.
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _divergence_name(label: str) -> str:
    return label.split("(")[0]


def _run_method(method: str, divergence: str, tensors: dict) -> None:
    params = ALL_DIVERGENCES[divergence]
    name = _divergence_name(divergence)
    beta = 0.0 if name == "forward_kl" else params.get("beta")
    hidden, weight = tensors["student_hidden"], tensors["student_weight"]
    teacher_hidden, teacher_weight = tensors["teacher_hidden"], tensors["teacher_weight"]
    if method == "naive":
        from lmdistill.losses import get, reduce

        with torch.no_grad():
            teacher_logits = teacher_hidden @ teacher_weight.t()
        reduce(get(name)(hidden @ weight.t(), teacher_logits, **params)).backward()
    elif method == "matmul_bound":
        with torch.no_grad():
            student_logits = hidden @ weight.t()
            teacher_logits = teacher_hidden @ teacher_weight.t()
            student_logits @ weight  # stands in for (dL/dz_s) · W
        del teacher_logits
    elif method == "fused":
        from lmdistill.losses.fused import fused_linear_divergence

        fused_linear_divergence(hidden, weight, teacher_hidden, teacher_weight, divergence=name, **params).backward()
    elif method == "liger":
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

        labels = torch.zeros(hidden.shape[0], dtype=torch.long)
        loss_fn = LigerFusedLinearJSDLoss(weight_hard_loss=0.0, weight_soft_loss=1.0, beta=beta, compiled=False)
        loss_fn(hidden, weight, teacher_hidden, teacher_weight, labels).backward()
    elif method == "trl":
        from trl.trainer.distillation_trainer import _chunked_divergence_loss

        mask = torch.ones(1, hidden.shape[0], dtype=torch.long)
        loss, _, _ = _chunked_divergence_loss(
            hidden.unsqueeze(0), teacher_hidden.unsqueeze(0), weight, teacher_weight, mask, beta
        )
        loss.backward()
    else:
        raise ValueError(method)


def worker(method: str, divergence: str, tokens: int, hidden_size: int, vocab: int) -> dict:
    """Create the inputs, run one forward + backward, return wall time and peak RSS over the inputs."""
    torch.set_num_threads(THREADS)
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "student_hidden": torch.randn(tokens, hidden_size, generator=generator).requires_grad_(True),
        "student_weight": torch.randn(vocab, hidden_size, generator=generator).mul_(0.02),
        "teacher_hidden": torch.randn(tokens, hidden_size, generator=generator),
        "teacher_weight": torch.randn(vocab, hidden_size, generator=generator).mul_(0.03),
    }
    base = _rss_bytes("VmRSS")
    exact_peak = _reset_peak_rss()
    start = time.perf_counter()
    try:
        _run_method(method, divergence, tensors)
    except Exception as error:  # recorded honestly in the table instead of crashing the whole benchmark
        return {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"}
    wall = time.perf_counter() - start
    return {"wall_s": wall, "peak_over_inputs_bytes": _rss_bytes("VmHWM") - base, "exact_peak": exact_peak}


PAIRED = ["matmul_bound", "fused"]  # run --rounds times each, interleaved, and compared round by round


def _run_worker(method: str, divergence: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", method, divergence, "--tokens", str(args.tokens),
               "--hidden", str(args.hidden), "--vocab", str(args.vocab)]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    lines = completed.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"error": f"exit {completed.returncode}: {completed.stderr.strip().splitlines()[-1:]}"}
    print(f"{divergence:16s} {method:14s} {result}", file=sys.stderr, flush=True)
    return result


def _summarise(runs: list[dict]) -> dict:
    """Median wall and peak over the rounds; the per-round walls are kept for the paired ratios."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    return {"wall_s": statistics.median(run["wall_s"] for run in runs),
            "peak_over_inputs_bytes": max(run["peak_over_inputs_bytes"] for run in runs),
            "round_walls": [run["wall_s"] for run in runs]}


def _ratio_cell(result: dict, bound: dict) -> str:
    """Wall / bound; for the paired methods the median of the per-round ratios with their range."""
    if not bound.get("wall_s"):
        return "–"
    own, reference = result.get("round_walls"), bound.get("round_walls")
    if own and reference and result is not bound:  # the bound against itself is 1.00x by definition
        ratios = [a / b for a, b in zip(own, reference)]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f})"
    return f"{result['wall_s'] / bound['wall_s']:.2f}x"


def _table(results: dict) -> str:
    lines = [
        "| divergence | method | runs | wall time (s, median) | ratio to matmul bound | peak RSS over inputs |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for divergence, by_method in results.items():
        bound = by_method.get("matmul_bound", {})
        for method in METHODS:
            if method not in by_method:
                continue
            result = by_method[method]
            if "error" in result:
                lines.append(f"| {divergence} | {METHOD_LABELS[method]} | – | failed: {result['error']} | – | – |")
                continue
            runs = len(result.get("round_walls") or [result])
            memory = f"{result['peak_over_inputs_bytes'] / 2**30:.2f} GiB"
            lines.append(f"| {divergence} | {METHOD_LABELS[method]} | {runs} | {result['wall_s']:.2f} | "
                         f"{_ratio_cell(result, bound)} | {memory} |")
    return "\n".join(lines)


def _cpu_model() -> str:
    output = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("Model name")), "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--divergences", default=",".join(ALL_DIVERGENCES),
                        help="naive, Liger and TRL run only on forward_kl and jsd (the issue's anchors)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of the bound and the fused loss")
    parser.add_argument("--write", action="store_true", help="replace this benchmark's section of BENCHMARKS.md")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "DIVERGENCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.tokens, args.hidden, args.vocab)))
        return

    results: dict[str, dict] = {}
    methods = args.methods.split(",")
    for divergence in args.divergences.split(","):
        if divergence not in ALL_DIVERGENCES:
            parser.error(f"unknown divergence {divergence!r}; choose from {', '.join(ALL_DIVERGENCES)}")
        for method in methods:
            if method in PAIRED or divergence in BOUND_ONLY_DIVERGENCES:
                continue
            results.setdefault(divergence, {})[method] = _run_worker(method, divergence, args)
        runs: dict[str, list[dict]] = {m: [] for m in PAIRED if m in methods}
        for round_index in range(args.rounds):  # alternate the order, so drift on the machine hits both alike
            for method in list(runs) if round_index % 2 == 0 else list(runs)[::-1]:
                runs[method].append(_run_worker(method, divergence, args))
        results.setdefault(divergence, {}).update({method: _summarise(r) for method, r in runs.items()})
    table = _table(results)
    print(table)
    if args.write:
        command = f"PYTHONPATH=. .venv/bin/python benchmarks/fused_loss.py --write --rounds {args.rounds}"
        body = (
            f"{SECTION}\n\nForward + backward of one logit divergence from hidden states, float32, N={args.tokens} "
            f"tokens, H={args.hidden}, V={args.vocab}, student lm_head frozen (so the bound is three matrix products), "
            f"each run in a fresh process; the bound and ours run {args.rounds} times, interleaved (order alternating), "
            f"and their ratio is the median of the per-round ratios (range in brackets); the other methods run once.\n"
            f"Command: `{command}`; machine: {_cpu_model()}, "
            f"{THREADS} threads (`torch.set_num_threads({THREADS})`), {datetime.date.today().isoformat()}.\n\n{table}\n"
        )
        replace_section(SECTION, body)


if __name__ == "__main__":
    main()
