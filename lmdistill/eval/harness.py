"""EleutherAI's lm-evaluation-harness on a saved model dir: ``simple_evaluate`` with its Hugging Face model wrapper.

Scores come back as ``lm_eval/<task>/<metric>`` (the harness's ``acc,none`` is ``acc``; standard errors are left
out), the key form ``evaluation.json``, the report and the model card read. Standard tasks download their data from
the Hub; a task defined in a local YAML (``include_path``) can read local files instead, e.g.
``examples/lm_eval/sst2_mc.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lmdistill.errors import UserError

_TASK_LINE = re.compile(r"^task:\s*['\"]?([\w.\-]+)", re.MULTILINE)


def local_task_names(include_path: str | Path) -> set[str]:
    """The task names defined by the YAML files under ``include_path`` (a file or a folder)."""
    path = Path(include_path)
    files = [path] if path.is_file() else sorted(path.rglob("*.yaml")) + sorted(path.rglob("*.yml"))
    return {name for file in files for name in _TASK_LINE.findall(file.read_text(encoding="utf-8"))}


def harness_scores(results: dict[str, Any]) -> dict[str, float]:
    """``simple_evaluate``'s ``results`` as ``{"lm_eval/<task>/<metric>": value}`` (numbers only, no stderr)."""
    scores = {}
    for task, metrics in results.get("results", {}).items():
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if metric.endswith("_stderr") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if metric in ("sample_len", "alias", "name"):
                continue
            name = metric if filter_name in ("", "none") else f"{metric}.{filter_name}"
            scores[f"lm_eval/{task}/{name}"] = float(value)
    return scores


def evaluate_with_harness(model_dir: str | Path, tasks: list[str], *, include_path: str | Path | None = None,
                          limit: int | None = None, batch_size: int = 8, num_fewshot: int | None = None,
                          device: str = "cpu") -> dict[str, float]:
    """Run lm-eval's ``tasks`` on the model in ``model_dir``; returns :func:`harness_scores`."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("--lm-eval needs lm-evaluation-harness: pip install 'lmdistill[lm-eval]'") from None
    if include_path is not None and not Path(include_path).exists():
        raise UserError(f"--lm-eval-include {str(include_path)!r} not found; pass a task YAML file or a folder of them")
    local = local_task_names(include_path) if include_path is not None else set()
    # Indexing the harness's own few thousand task files takes a while: skip it when every task is local.
    manager = TaskManager(include_path=str(include_path) if include_path else None,
                          include_defaults=not set(tasks) <= local, verbosity="ERROR")
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        raise UserError(f"lm-eval has no task {unknown[0]!r}; check the name (`lm_eval --tasks list`) or pass its "
                        f"YAML with --lm-eval-include")
    model = HFLM(pretrained=str(model_dir), batch_size=batch_size, device=device)
    results = lm_eval.simple_evaluate(model=model, tasks=list(tasks), task_manager=manager, limit=limit,
                                      num_fewshot=num_fewshot, bootstrap_iters=0, log_samples=False)
    return harness_scores(results or {})
