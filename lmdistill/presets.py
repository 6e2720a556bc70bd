"""Named distillation recipes (DistilBERT, TinyBERT, MiniLM, MiniLMv2, TextBrewer, the article's objectives).

A preset expands to one or more :class:`Stage` s, each an objective (a list of term dicts, exactly as a run config's
``objective``) and a ``share`` of the run's optimizer steps. A *preset config* is a run config whose ``objective`` is
replaced by ``preset: NAME`` or ``preset: {name: NAME, option: value}``; it may add ``stage_overrides:
{stage_name: {dotted.key: value}}``. :func:`expand_preset_config` turns it into one :class:`RunConfig` per stage:
stage k writes to ``output_dir/<k>-<stage>`` (a one-stage preset to ``output_dir`` itself) and every stage after the
first starts from the previous stage's student. ``lmdistill train --config`` runs them in order.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from lmdistill.config import RunConfig, apply_overrides, parse_config, read_yaml
from lmdistill.errors import UserError
from lmdistill.train.loop import RunResult, distill


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe: its objective terms and its fraction of the run's optimizer steps (or epochs)."""

    name: str
    objective: list[dict[str, Any]]
    share: float = 1.0


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    build: Callable[..., list[Stage]]
    options: dict[str, Any] = field(default_factory=dict)  # option -> default


EMBEDDINGS = [[-1, -1]]  # the (student, teacher) layer pair of the embedding outputs


def _distilbert(temperature: float) -> list[Stage]:
    return [Stage("distil", [
        {"name": "soft_ce", "weight": 5.0, "temperature": temperature},
        {"name": "ce", "weight": 2.0},  # the labelled-task analogue of DistilBERT's MLM loss
        {"name": "hidden_cosine", "weight": 1.0, "layers": "last"},
    ])]


def _tinybert(temperature: float, intermediate_share: float) -> list[Stage]:
    intermediate = [
        {"name": "hidden_mse", "weight": 1.0, "layers": EMBEDDINGS},
        {"name": "hidden_mse", "weight": 1.0, "layers": "uniform"},
        {"name": "attention_mse", "weight": 1.0, "layers": "uniform"},
    ]
    prediction = [{"name": "soft_ce", "weight": 1.0, "temperature": temperature}]
    return [Stage("intermediate", intermediate, intermediate_share), Stage("prediction", prediction, 1 - intermediate_share)]


def _minilm(transfer_share: float) -> list[Stage]:
    return [Stage("attention_transfer", [{"name": "minilm", "weight": 1.0, "layers": "last"}], transfer_share),
            Stage("finetune", [{"name": "ce", "weight": 1.0}], 1 - transfer_share)]


def _minilm_v2(num_relation_heads: int, transfer_share: float) -> list[Stage]:
    relations = {"name": "minilm_v2", "weight": 1.0, "layers": "last", "num_relation_heads": num_relation_heads}
    return [Stage("relation_transfer", [relations], transfer_share),
            Stage("finetune", [{"name": "ce", "weight": 1.0}], 1 - transfer_share)]


def _textbrewer_general(temperature: float, hard_label_weight: float, kd_loss_type: str,
                        kd_loss_weight: float) -> list[Stage]:
    # TextBrewer's GeneralDistiller with the L3_hidden_mse + L3_hidden_smmd matches (embeddings included) and its
    # logit loss, which is not multiplied by T²: kd_loss_type "ce" (soft cross-entropy, TextBrewer's default) or
    # "mse" (mean squared error of the logits over T). kd_loss_weight and hard_label_weight (CE on the labels, 0 there
    # by default) are TextBrewer's DistillationConfig options of those names.
    if kd_loss_type not in TEXTBREWER_KD_LOSSES:
        raise UserError(f"preset option kd_loss_type={kd_loss_type!r} is not one of "
                        f"{', '.join(TEXTBREWER_KD_LOSSES)}; choose one of those")
    for option, value in (("hard_label_weight", hard_label_weight), ("kd_loss_weight", kd_loss_weight)):
        if float(value) < 0:
            raise UserError(f"preset option {option}={value} is negative; use 0 or more")
    terms = [
        {"name": TEXTBREWER_KD_LOSSES[kd_loss_type], "weight": float(kd_loss_weight), "temperature": temperature,
         "scale_by_temperature_squared": False},
        {"name": "hidden_mse", "weight": 1.0, "layers": EMBEDDINGS},
        {"name": "hidden_mse", "weight": 1.0, "layers": "uniform"},
        {"name": "hidden_mmd", "weight": 1.0, "layers": EMBEDDINGS},
        {"name": "hidden_mmd", "weight": 1.0, "layers": "uniform"},
    ]
    if float(hard_label_weight) > 0:
        terms.append({"name": "ce", "weight": float(hard_label_weight)})
    return [Stage("distil", [term for term in terms if term["weight"] > 0])]


TEXTBREWER_KD_LOSSES = {"ce": "soft_ce", "mse": "logit_mse"}


def _semantic(alpha: float, temperature: float) -> list[Stage]:
    _check_fraction("alpha", alpha)
    terms = [{"name": "reverse_kl", "weight": alpha, "temperature": temperature},
             {"name": "hidden_mse", "weight": 1 - alpha, "layers": "uniform"}]
    return [Stage("distil", [term for term in terms if term["weight"] > 0])]


def _attention(temperature: float, weight: float) -> list[Stage]:
    return [Stage("distil", [
        {"name": "ce", "weight": 1.0},
        {"name": "attention_kl", "weight": weight, "temperature": temperature, "layers": "uniform"},
    ])]


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("distilbert", "5·soft_ce(T=2) + 2·ce + 1·hidden_cosine on the last layer (Sanh et al. 2019)",
           _distilbert, {"temperature": 2.0}),
    Preset("tinybert", "stage 1: hidden_mse (embeddings + uniform layers) + attention_mse; stage 2: soft_ce(T) (Jiao et al. 2020)",
           _tinybert, {"temperature": 1.0, "intermediate_share": 0.5}),
    Preset("minilm", "stage 1: minilm (attention + value relations, last layer); stage 2: ce fine-tuning (Wang et al. 2020)",
           _minilm, {"transfer_share": 0.5}),
    Preset("minilm_v2", "stage 1: minilm_v2 Q/K/V relation heads, last layer; stage 2: ce fine-tuning (Wang et al. 2021)",
           _minilm_v2, {"num_relation_heads": 4, "transfer_share": 0.5}),
    Preset("textbrewer_general", "kd_loss_weight·soft_ce or logit_mse (kd_loss_type; T, no T²) + hidden_mse + hidden_mmd, embeddings and uniform layers (+ hard_label_weight·ce) (TextBrewer GeneralDistiller)",
           _textbrewer_general, {"temperature": 8.0, "hard_label_weight": 0.0, "kd_loss_type": "ce", "kd_loss_weight": 1.0}),
    Preset("semantic", "alpha·reverse_kl + (1 − alpha)·hidden_mse over uniform layers (the source article)",
           _semantic, {"alpha": 0.5, "temperature": 1.0}),
    Preset("attention", "ce + weight·attention_kl(T) over uniform layers (the source article's attention loss)",
           _attention, {"temperature": 3.0, "weight": 1.0}),
]}


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise UserError(f"preset option {name}={value} is outside [0, 1]; choose a value between 0 and 1")


def preset_stages(name: str, **options: Any) -> list[Stage]:
    """The stages of preset ``name`` with ``options`` over its defaults; unknown names/options are UserErrors."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)} (see `lmdistill presets`)")
    preset = PRESETS[name]
    unknown = sorted(set(options) - set(preset.options))
    if unknown:
        raise UserError(f"preset {name!r} has no option {', '.join(map(repr, unknown))}; "
                        f"valid options: {', '.join(preset.options) or '(none)'}")
    settings = {**preset.options, **options}
    for share_option in ("intermediate_share", "transfer_share"):
        if share_option in settings and not 0 < float(settings[share_option]) < 1:
            raise UserError(f"preset option {share_option}={settings[share_option]} must be strictly between 0 and 1")
    return preset.build(**settings)


def describe_presets() -> list[str]:
    """One line per preset: name, options with defaults, summary."""
    lines = []
    for preset in PRESETS.values():
        options = ", ".join(f"{k}={v}" for k, v in preset.options.items()) or "-"
        lines.append(f"{preset.name:19s} {preset.summary} [options: {options}]")
    return lines


def expand_preset_config(raw: dict[str, Any], *, source: str = "config") -> list[RunConfig]:
    """One validated :class:`RunConfig` per stage of the raw preset config ``raw`` (see the module docstring)."""
    raw = copy.deepcopy(raw)
    if "preset" not in raw:
        return [parse_config(raw, source=source)]
    if "objective" in raw:
        raise UserError(f"{source}: give either `preset` or `objective`, not both; a preset supplies the objective")
    preset = raw.pop("preset")
    options = {k: v for k, v in preset.items() if k != "name"} if isinstance(preset, dict) else {}
    name = preset.get("name") if isinstance(preset, dict) else preset
    if not isinstance(name, str):
        raise UserError(f"{source}: preset must be a name or {{name: NAME, option: value}}")
    stage_overrides = raw.pop("stage_overrides", None) or {}
    stages = preset_stages(name, **options)
    unknown = sorted(set(stage_overrides) - {s.name for s in stages})
    if unknown:
        raise UserError(f"{source}: stage_overrides names {unknown}, but preset {name!r} has stages {[s.name for s in stages]}")
    output_dir = Path(str(raw.get("output_dir", "")))
    configs: list[RunConfig] = []
    for index, stage in enumerate(stages):
        stage_raw = copy.deepcopy(raw)
        stage_raw["objective"] = stage.objective
        if len(stages) > 1:
            stage_raw["output_dir"] = str(output_dir / f"{index + 1}-{stage.name}")
            stage_raw["train"] = _share_of_length(stage_raw.get("train") or {}, stage.share)
        if index > 0:
            stage_raw["student"] = {"path": str(Path(configs[-1].output_dir) / "student"), "dtype": configs[-1].student.dtype}
        # JSON is YAML, so each value survives apply_overrides' YAML parse unchanged.
        overrides = [f"{key}={json.dumps(value)}" for key, value in (stage_overrides.get(stage.name) or {}).items()]
        configs.append(parse_config(apply_overrides(stage_raw, overrides), source=f"{source} (stage {stage.name})"))
    return configs


def _share_of_length(train: dict[str, Any], share: float) -> dict[str, Any]:
    train = dict(train)
    if train.get("max_steps") is not None:
        train["max_steps"] = max(1, math.floor(train["max_steps"] * share + 0.5))
    elif train.get("epochs") is not None:
        train["epochs"] = train["epochs"] * share
    return train


def load_preset_config(path: str | Path, overrides: list[str] | None = None) -> list[RunConfig]:
    """Read a (preset) run config YAML, apply ``key=value`` overrides, expand into stage configs."""
    raw = read_yaml(path, overrides)
    if "preset" not in raw:
        return [parse_config(raw, source=str(path))]
    return expand_preset_config(raw, source=str(path))


def run_stages(configs: list[RunConfig], *, resume: bool = False, stop_after: int | None = None) -> list[RunResult]:
    """Run stage configs in order (each stage's student feeds the next); returns their ``RunResult`` s.

    A stage that stops early (Ctrl-C, SIGTERM, ``stop_after``) ends the list: the next stage would start from a
    half-trained student, so it does not start."""
    results = []
    for config in configs:
        results.append(distill(config, resume=resume, stop_after=stop_after))
        if results[-1].stopped_early:
            break
    return results
