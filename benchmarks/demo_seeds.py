"""The demo's comparison (distilled vs CE-only baseline, same pruned student, data and steps) over several seeds.

One held-out evaluation is noisy (about +-1 point of agreement on the demo's ~1,500 held-out positions), so this runs
the demo's training and evaluation stages for seeds 0..N-1 on the same teacher pseudo data and reports each seed and
the mean. The seed changes the data order (the student is the same pruned copy of the teacher every time).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/demo_seeds.py --seeds 3 [--workdir /tmp/lmdistill-demo-seeds]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

from lmdistill.demo import DemoSettings, distil_and_compare, prepare_teacher_and_data

METRICS = ("perplexity", "top1_agreement", "mean_token_kl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/lmdistill-demo-seeds")
    parser.add_argument("--seed-index", type=int, help=argparse.SUPPRESS)  # worker mode: one seed, JSON to stdout
    args = parser.parse_args()
    work = Path(args.workdir)
    settings = DemoSettings(output_dir=str(work))
    if args.seed_index is not None:
        seeded = replace(settings, seed=args.seed_index)
        result = distil_and_compare(seeded, work / "teacher", work, work / f"seed-{args.seed_index}")
        print("RESULT " + json.dumps(result))
        return
    prepare_teacher_and_data(settings, work)
    started = time.perf_counter()
    # Two seeds at a time, one per core (each process single-threaded through OMP_NUM_THREADS=1 in the environment).
    pending = list(range(args.seeds))
    results: dict[int, dict] = {}
    while pending:
        batch, pending = pending[:2], pending[2:]
        workers = {seed: subprocess.Popen([sys.executable, __file__, "--workdir", str(work), "--seed-index", str(seed)],
                                          stdout=subprocess.PIPE, text=True) for seed in batch}
        for seed, worker in workers.items():
            output, _ = worker.communicate()
            line = next(l for l in output.splitlines() if l.startswith("RESULT "))
            results[seed] = json.loads(line.removeprefix("RESULT "))
    elapsed = time.perf_counter() - started
    rows = ["| seed | model | perplexity | top-1 agreement | KL(teacher ‖ model) |", "| --- | --- | ---: | ---: | ---: |"]
    for seed in sorted(results):
        for model in ("student", "baseline"):
            row = results[seed][model]
            rows.append(f"| {seed} | {'distilled' if model == 'student' else 'CE-only baseline'} | {row['perplexity']:.1f} | "
                        f"{row['top1_agreement']:.3f} | {row['mean_token_kl']:.3f} |")
    for model in ("student", "baseline"):
        means = [statistics.mean(results[s][model][m] for s in results) for m in METRICS]
        rows.append(f"| mean | {'distilled' if model == 'student' else 'CE-only baseline'} | {means[0]:.1f} | {means[1]:.3f} | {means[2]:.3f} |")
    wins = {m: sum((results[s]["student"][m] > results[s]["baseline"][m]) == (m == "top1_agreement") for s in results) for m in METRICS}
    print(f"`OMP_NUM_THREADS=1 .venv/bin/python benchmarks/demo_seeds.py --seeds {args.seeds}`, {date.today()}, "
          f"{platform.processor() or platform.machine()}, two single-thread seeds at a time, {elapsed:.0f} s.\n")
    print("\n".join(rows))
    print(f"\nDistilled better than the baseline in: perplexity {wins['perplexity']}/{len(results)} seeds, "
          f"agreement {wins['top1_agreement']}/{len(results)}, KL {wins['mean_token_kl']}/{len(results)}.")


if __name__ == "__main__":
    main()
