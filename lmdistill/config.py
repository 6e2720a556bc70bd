"""The typed run configuration: one YAML file, validated at load, with ``key=value`` overrides.

Every user-facing setting lives here. Validation errors become one-line :class:`UserError` messages naming the field
path, so ``lmdistill train --config run.yaml`` fails before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmdistill.errors import UserError
from lmdistill.losses import registry


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LinearSchedule(Strict):
    """A value that moves linearly from ``start`` to ``end`` over the optimizer steps of the run."""

    start: float
    end: float


ScheduledFloat = Union[float, LinearSchedule]


def value_at(schedule: ScheduledFloat, progress: float) -> float:
    """The scheduled value at ``progress`` in [0, 1] (fraction of optimizer steps done)."""
    if isinstance(schedule, LinearSchedule):
        return schedule.start + (schedule.end - schedule.start) * progress
    return float(schedule)


Dtype = Literal["float32", "bfloat16", "float16", "auto"]


class LayerChoice(Strict):
    """Which of a layer stack's layers to keep: exactly one of ``layers`` (explicit 0-based indices), ``every`` (keep
    every k-th layer, starting at 0), ``first_last`` (keep the first k and the last k layers) or ``count`` (k layers
    spread evenly, first and last included)."""

    layers: list[int] | None = None
    every: int | None = Field(default=None, ge=1)
    first_last: int | None = Field(default=None, ge=1)
    count: int | None = Field(default=None, ge=1)

    def selectors(self) -> list[str]:
        return [k for k in ("layers", "every", "first_last", "count") if getattr(self, k) is not None]

    def choice(self) -> dict[str, Any]:
        """The arguments of :func:`lmdistill.models.pruning.choose_layers`."""
        return {k: getattr(self, k) for k in ("layers", "every", "first_last", "count")}

    @model_validator(mode="after")
    def _exactly_one(self):
        if type(self) is LayerChoice and len(self.selectors()) != 1:
            raise ValueError("set exactly one of layers, every, first_last, count")
        if self.layers is not None and (not self.layers or len(set(self.layers)) != len(self.layers)):
            raise ValueError("layers must be a non-empty list of distinct layer indices")
        return self


class WidthPruning(Strict):
    """Width pruning by activation importance (Minitron): the sizes the student keeps; unset sizes stay whole."""

    intermediate_size: int | None = Field(default=None, ge=1)  # MLP neurons per layer
    num_key_value_heads: int | None = Field(default=None, ge=1)  # whole KV groups, with their query heads
    hidden_size: int | None = Field(default=None, ge=1)  # channels of the residual stream and embeddings


class FromTeacher(LayerChoice):
    """Build the student by keeping some of the teacher's layers, weights copied (DistilBERT/Minitron depth pruning).

    One layer choice (see :class:`LayerChoice`) for a single stack; for an encoder-decoder teacher, ``encoder`` and/or
    ``decoder`` choose each stack's layers separately (a stack without a choice is kept whole).
    """

    encoder: LayerChoice | None = None
    decoder: LayerChoice | None = None
    # With count: `uniform` spreads the kept layers evenly; `importance` keeps the `count` most important layers
    # (first and last always kept), scored on `calibration_examples` training examples by `score`: block influence
    # (1 - cos(input, output) of each layer, ShortGPT; one forward pass) or the loss increase when the layer is
    # skipped (Minitron; one forward pass per layer).
    by: Literal["uniform", "importance"] = "uniform"
    score: Literal["block_influence", "loss_increase"] = "block_influence"
    calibration_examples: int = Field(default=32, ge=1)
    # Then narrow the kept layers (Llama-family decoders), also ranked on the calibration examples.
    width: WidthPruning | None = None

    @property
    def depth_is_set(self) -> bool:
        return bool(self.selectors())

    @property
    def needs_calibration(self) -> bool:
        return self.by == "importance" or self.width is not None

    @model_validator(mode="after")
    def _one_form(self) -> "FromTeacher":
        split = self.encoder is not None or self.decoder is not None
        if split and (self.selectors() or self.needs_calibration):
            raise ValueError("give either encoder/decoder layer choices or one of layers, every, first_last, count "
                             "(with by/width), not both")
        if not split and (len(self.selectors()) > 1 or (not self.selectors() and self.width is None)):
            raise ValueError("set exactly one of layers, every, first_last, count (or encoder/decoder for an "
                             "encoder-decoder teacher, or only width to keep every layer)")
        if self.by == "importance" and self.count is None:
            raise ValueError("by: importance chooses `count` layers; set count (layers/every/first_last are fixed choices)")
        return self


class TeacherConfig(Strict):
    """The frozen teacher: a Hugging Face model dir, a hub id, a ``.gguf`` file (path ending in .gguf), or a cache."""

    path: str | None = None
    config: dict[str, Any] | None = None  # fresh random weights from a transformers config dict (tests, smoke runs)
    cache: str | None = None  # a teacher-signal cache made by `lmdistill cache`
    dtype: Dtype = "float32"
    weight: float = Field(default=1.0, gt=0)  # for several teachers
    # The teacher's own tokenizer (dir, hub id or .gguf file) when it is not the student's: cross-tokenizer
    # distillation, the student's text re-tokenised for the teacher and aligned through UTF-8 bytes.
    tokenizer: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "TeacherConfig":
        sources = [k for k in ("path", "config", "cache") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError("set exactly one of path, config, cache")
        if self.tokenizer is not None and self.cache is not None:
            raise ValueError("teacher.tokenizer (a teacher with another tokenizer) works with a live teacher only for now; "
                             "a teacher cache must share the student's tokenizer (drop teacher.tokenizer or use teacher.path)")
        return self


class LoraSettings(Strict):
    """Train LoRA adapters (peft) instead of the student's weights; the teacher is never touched."""

    r: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    merge: bool = True  # export a merged model dir; False: the adapter only (peft format)


class StudentConfig(Strict):
    """The student: a model dir/id, a depth-pruned copy of the teacher, or a config with fresh weights; optionally
    trained through LoRA adapters."""

    path: str | None = None
    # With path: keep only these 0-based layers of that model (weights copied), e.g. every other layer of a
    # pretrained encoder with a fresh task head (the DistilBERT / TextBrewer initialisation).
    layers: list[int] | None = None
    from_teacher: FromTeacher | None = None
    config: dict[str, Any] | None = None
    dtype: Dtype = "float32"
    lora: LoraSettings | None = None
    # The input embeddings (and an output head tied to them) keep the weights the student starts from: fewer trained
    # parameters and less optimizer state; on little data a pruned student generalises better (BENCHMARKS
    # "Compression": the demo's 18-layer student on 64 examples, held-out perplexity 6.84 / 7.49 against 7.19 / 7.78
    # at seeds 0 / 1).
    freeze_embeddings: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> "StudentConfig":
        sources = [k for k in ("path", "from_teacher", "config") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError("set exactly one of path, from_teacher, config")
        if self.layers is not None:
            if self.path is None:
                raise ValueError("student.layers picks layers of the model at student.path; set path, or use "
                                 "from_teacher: {layers: [...]} to take the teacher's")
            if not self.layers or len(set(self.layers)) != len(self.layers):
                raise ValueError("student.layers must be a non-empty list of distinct layer indices")
        return self


DataFormat = Literal["text", "prompt_completion", "chat"]


class ParallelFiles(Strict):
    """Parallel plain-text files, one sentence a line (gzip accepted): line i of ``source`` translates to line i of
    ``target``. Read as records ``{"source": ..., "target": ...}``."""

    source: str
    target: str


DataSource = Union[str, list[str], ParallelFiles]


class DataConfig(Strict):
    """Training data: files (jsonl/json/txt/csv/tsv/parquet) or a `datasets` id, and how to read their fields."""

    train: DataSource
    eval: DataSource | None = None
    eval_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)  # held out from train when `eval` is not given
    dataset_split: str = "train"  # for a `datasets` id
    format: DataFormat = "text"
    text_field: str = "text"  # sequence_classification: the first sentence
    text_pair_field: str | None = None  # sequence_classification: the second sentence of a pair
    label_field: str = "label"  # sequence_classification
    labels: list[str] | None = None  # sequence_classification: class names in id order (string labels -> ids)
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = "messages"
    max_length: int = Field(default=256, ge=2)
    pack: bool = True  # text: concatenate documents and cut into max_length blocks
    # causal_lm: read data.train with `datasets` streaming, tokenised and packed on the fly, in order (shuffle the
    # corpus beforehand), never all in memory; needs train.max_steps; a checkpoint keeps the position in the stream.
    streaming: bool = False
    max_examples: int | None = Field(default=None, ge=1)
    # sequence_classification training: each non-special token becomes the tokenizer's mask token with this
    # probability, drawn afresh every step; teacher and student read the same masked batch. Evaluation is unmasked.
    mask_probability: float = Field(default=0.0, ge=0.0, lt=1.0)
    # question_answering: context windows of max_length tokens overlapping by doc_stride; questions cut to
    # max_question_tokens; predicted answers at most max_answer_length tokens (SQuAD's usual 128 / 64 / 30).
    doc_stride: int = Field(default=128, ge=0)
    max_question_tokens: int = Field(default=64, ge=1)
    max_answer_length: int = Field(default=30, ge=1)
    # seq2seq_lm: the source and target fields of each record (parallel files give "source"/"target"), a prefix
    # put before every source ("translate English to German: "), and the target's token limit (default max_length).
    source_field: str = "source"
    target_field: str = "target"
    source_prefix: str = ""
    max_target_length: int | None = Field(default=None, ge=2)


class TermConfig(BaseModel):
    """One weighted term of the objective: ``{name, weight, layers?, ...loss parameters}``.

    Extra keys are the loss's own parameters (checked against the registry at load). ``temperature`` may be a
    linear schedule. ``layers`` (hidden/attention terms) is ``uniform``, ``last`` or a list of
    ``[student_layer, teacher_layer]`` pairs. ``stack`` (hidden/attention terms of encoder-decoder models) names the
    layer stack the term reads and its layer map counts in: ``encoder``, ``decoder`` or (attention) ``cross``; unset,
    the task's default (the decoder for seq2seq_lm). The task checks it against its models' stacks.
    """

    model_config = ConfigDict(extra="allow")

    name: str
    weight: ScheduledFloat = 1.0
    layers: Literal["uniform", "last"] | list[tuple[int, int]] = "uniform"
    # On-policy runs: which batches the term is part of: every batch, the student's own samples, or the others
    # (the data, e.g. teacher answers): `{name: token_reverse_kl, batches: samples}` + `{name: forward_kl, batches: data}`.
    batches: Literal["all", "samples", "data"] = "all"
    stack: Literal["encoder", "decoder", "cross"] | None = None

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _known_loss(self) -> "TermConfig":
        spec = registry.spec(self.name)  # UserError listing the valid names
        params = self.params
        registry.validate_params(self.name, params)
        if "temperature" in params:
            params["temperature"] = _parse_schedule(params["temperature"], f"{self.name}.temperature")
            self.__pydantic_extra__["temperature"] = params["temperature"]
        if spec.kind in ("logits", "labels", "spans") and self.layers != "uniform":
            raise ValueError(f"{self.name} works on logits; `layers` applies to hidden/attention terms only")
        return self

    @model_validator(mode="after")
    def _stack(self) -> "TermConfig":
        if self.stack is None:
            return self
        spec = registry.spec(self.name)
        if spec.kind not in ("hidden", "attention"):
            raise ValueError(f"{self.name} is a {spec.kind} term; `stack` applies to hidden/attention terms only")
        if self.stack == "cross" and spec.kind == "hidden":
            raise ValueError(f"{self.name}: hidden states belong to the encoder or the decoder; stack: cross applies "
                             "to attention terms (set stack: encoder or stack: decoder)")
        if self.stack == "cross" and spec.self_attention_only:
            raise ValueError(f"{self.name} relates a sequence's positions to each other (Q-Q, K-K, V-V), but "
                             "cross-attention's queries and keys are two sequences; use attention_kl or attention_mse "
                             "with stack: cross, or stack: encoder/decoder")
        return self


def _parse_schedule(value: Any, where: str) -> ScheduledFloat:
    if isinstance(value, dict):
        return LinearSchedule(**value)
    if isinstance(value, (int, float)):
        return float(value)
    raise ValueError(f"{where} must be a number or {{start, end}}")


class SamplingConfig(Strict):
    """Sampling for generation (teacher pseudo data, student rollouts). ``temperature`` here is the *sampling*
    temperature; the distillation temperature of a loss term is a different setting on that term."""

    temperature: float = Field(default=1.0, ge=0)  # 0 = greedy
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)  # 0 = off
    max_new_tokens: int = Field(default=64, ge=1)


class TrainConfig(Strict):
    """Optimisation: steps or epochs, batch, accumulation, AdamW with warmup + cosine, clipping, precision."""

    max_steps: int | None = Field(default=None, ge=1)
    epochs: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=8, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=5e-4, gt=0)
    min_learning_rate_ratio: float = Field(default=0.1, ge=0, le=1)
    warmup_steps: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    # Mixed precision (weights stay float32); "auto": bf16 where the device computes in bfloat16 natively (a GPU with
    # bf16, a CPU with AMX or AVX512-BF16), else "no".
    precision: Literal["no", "bf16", "fp16", "auto"] = "no"
    log_every: int = Field(default=10, ge=1)
    eval_every: int | None = Field(default=None, ge=1)
    # At each evaluation the student also samples once from this many held-out prompts: the teacher's NLL of the
    # samples, distinct-2 and the share that loop.
    eval_samples: int = Field(default=0, ge=0)
    eval_sampling: SamplingConfig | None = None  # how those samples are drawn (default: on_policy.sampling)
    save_every: int | None = Field(default=None, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    max_bad_steps: int = Field(default=5, ge=1)  # consecutive non-finite losses before the run stops
    fused_vocab_threshold: int = Field(default=8192, ge=1)  # use the fused logit loss at or above this vocab size
    progress: bool = True  # a progress bar on a terminal; otherwise a log line every progress_seconds
    progress_seconds: float = Field(default=30.0, ge=0)  # 0: a line every step
    # Experiment trackers (accelerate's integrations) that mirror metrics.jsonl; [] logs to metrics.jsonl only.
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio", "aim"]] = ["tensorboard"]
    tracker_project: str = "lmdistill"  # the W&B / Trackio project, MLflow experiment, Aim experiment

    @model_validator(mode="after")
    def _length(self) -> "TrainConfig":
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of max_steps, epochs")
        return self


class OnPolicyConfig(Strict):
    """GKD-style mixing: with probability ``lmbda`` a batch's completions are replaced by the student's own samples
    (prompt tokens never enter the loss), then scored by the teacher with the objective's divergences."""

    lmbda: float = Field(default=0.5, ge=0, le=1)
    sampling: SamplingConfig = SamplingConfig()


class OutputConfig(Strict):
    """What happens to the exported student besides ``output_dir``: ``push_to_hub`` names a Hub repo (NAME or
    OWNER/NAME) that the student, its model card and the report are uploaded to when the run finishes."""

    push_to_hub: str | None = None
    private: bool = False  # create the Hub repo private


class RunConfig(Strict):
    """A whole distillation run."""

    output_dir: str
    seed: int = 0
    task: str = "causal_lm"  # a name in lmdistill.tasks.TASKS (checked with the task's own settings before loading)
    # None: a label-only run (fine-tuning), which loads no teacher.
    teacher: TeacherConfig | list[TeacherConfig] | None = None
    student: StudentConfig
    tokenizer: str | None = None  # dir, hub id or .gguf file; default: the teacher's (the student's for a cache)
    # Several teachers: logit terms use their weighted mixture in probability space; hidden-state and attention terms
    # use this one teacher (an index into `teacher`).
    feature_teacher: int = Field(default=0, ge=0)
    data: DataConfig
    objective: list[TermConfig] = Field(min_length=1)
    train: TrainConfig
    on_policy: OnPolicyConfig | None = None
    output: OutputConfig | None = None

    @property
    def teachers(self) -> list[TeacherConfig]:
        if self.teacher is None:
            return []
        return self.teacher if isinstance(self.teacher, list) else [self.teacher]

    @property
    def needs_teacher(self) -> bool:
        """Whether any objective term reads the teacher (label terms read only the data)."""
        return any(registry.spec(term.name).kind != "labels" for term in self.objective)

    @model_validator(mode="after")
    def _streaming(self) -> "RunConfig":
        if self.data.streaming:
            if self.train.max_steps is None:
                raise ValueError("data.streaming reads a corpus of unknown length: set train.max_steps instead of train.epochs")
            if self.data.eval_fraction > 0:
                raise ValueError("data.streaming cannot hold records out of a stream; give data.eval instead of data.eval_fraction")
        return self

    @model_validator(mode="after")
    def _batch_selection(self) -> "RunConfig":
        for term in self.objective:
            if term.batches != "all" and self.on_policy is None:
                raise ValueError(f"objective term {term.name} has batches: {term.batches}, which chooses between the student's "
                                 "samples and the data; add on_policy: {lmbda: ...} or remove `batches`")
            sampled_only = term.batches == "samples" or (self.on_policy is not None and self.on_policy.lmbda == 1)
            if registry.spec(term.name).kind == "tokens" and not sampled_only:
                raise ValueError(f"objective term {term.name} scores tokens drawn from the student, so it applies to "
                                 f"student samples only: set batches: samples on it (and on_policy: {{lmbda: ...}})")
        if self.on_policy is not None:
            lmbda = self.on_policy.lmbda
            for kind, present in (("samples", lmbda > 0), ("data", lmbda < 1)):
                if present and not any(term.batches in ("all", kind) for term in self.objective):
                    raise ValueError(f"with on_policy.lmbda={lmbda} some batches are {kind} batches but no objective "
                                     f"term applies to them; add a term with batches: {kind} (or batches: all)")
        return self

    @model_validator(mode="after")
    def _teachers(self) -> "RunConfig":
        teachers = self.teachers
        if isinstance(self.teacher, list) and not teachers:
            raise ValueError("teacher: give at least one teacher")
        if not teachers:
            if self.needs_teacher:
                raise ValueError("the objective has terms that read a teacher but no teacher is given; add teacher: "
                                 "{path: ...} or keep only label terms (ce)")
            if self.student.from_teacher is not None:
                raise ValueError("student.from_teacher needs a teacher to copy layers from; add teacher: {path: ...}")
            if self.on_policy is not None:
                raise ValueError("on_policy needs a teacher to score the student's samples; add teacher: {path: ...}")
            return self
        if self.feature_teacher >= len(teachers):
            raise ValueError(f"feature_teacher={self.feature_teacher} but there are {len(teachers)} teachers (0-based index)")
        if self.on_policy is not None and any(t.cache is not None for t in teachers):
            raise ValueError("on_policy needs a live teacher to score the student's samples; a teacher cache holds only "
                             "the training data's signal (drop on_policy or use teacher.path)")
        if len(teachers) > 1 and any(t.cache is not None for t in teachers):
            raise ValueError("a teacher cache works with a single teacher; cache each teacher's mixture yourself or drop the list")
        if self.data.streaming and any(t.cache is not None for t in teachers):
            raise ValueError("a teacher cache holds the signal of in-memory examples; with data.streaming use a live "
                             "teacher (teacher.path) or set data.streaming: false")
        if self.data.mask_probability > 0:
            if any(t.cache is not None for t in teachers):
                raise ValueError("data.mask_probability needs a live teacher: a teacher cache holds its signal for the "
                                 "unmasked text only (use teacher.path or set data.mask_probability: 0)")
        self._check_cross_tokenizer(teachers)
        return self

    def _check_cross_tokenizer(self, teachers: list[TeacherConfig]) -> None:
        """What a teacher with its own tokenizer (``teacher.tokenizer``) cannot do yet, each as one line."""
        if not any(t.tokenizer is not None for t in teachers):
            return
        if len(teachers) > 1:
            raise ValueError("several teachers with teacher.tokenizer are not supported yet; distil from one teacher "
                             "with another tokenizer, or several that share the student's")
        if self.student.from_teacher is not None:
            raise ValueError("student.from_teacher copies the teacher's layers and vocabulary; with teacher.tokenizer give "
                             "student.path or student.config (and `tokenizer:` for the student)")
        if self.task != "causal_lm":
            raise ValueError(f"teacher.tokenizer (cross-tokenizer distillation) works with task causal_lm, not {self.task!r}")
        if self.tokenizer is None and self.student.path is None:
            raise ValueError("with teacher.tokenizer set `tokenizer:` to the student's tokenizer (the student comes from a config)")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict; list items by index (``objective.0.weight``)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} is not key=value; write e.g. train.max_steps=3")
        key, _, text = item.partition("=")
        value = yaml.safe_load(text) if text else None
        node: Any = raw
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, ".".join(parts[: i + 1]), create=True)
        last = parts[-1]
        if not isinstance(node, (dict, list)):
            raise UserError(f"override path {key!r} goes through a value that is not a mapping; check the key path")
        if isinstance(node, list):
            node[_index(node, last, key)] = value
        else:
            node[last] = value
    return raw


def _child(node: Any, part: str, path: str, *, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, path)]
    if not isinstance(node, dict):
        raise UserError(f"override path {path!r} goes through a value that is not a mapping; check the key path")
    if part not in node or node[part] is None:
        node[part] = {}
    return node[part]


def _index(node: list, part: str, path: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise UserError(f"override path {path!r}: {part!r} is not an index of a list of {len(node)} items; use 0..{len(node) - 1}")
    return int(part)


def validate(model: type[BaseModel], raw: Any, *, source: str = "config"):
    """Validate a raw mapping into ``model``; the first error becomes a one-line UserError naming the field path."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise UserError(f"{source}: {describe_validation_error(error)}") from None


def parse_config(raw: Any, *, source: str = "config") -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig`; the first error becomes a one-line UserError."""
    return validate(RunConfig, raw, source=source)


def describe_validation_error(error: ValidationError) -> str:
    """The first validation error as ``field.path: problem; fix``, plus how many more there are."""
    first = error.errors()[0]
    path = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-", "tagged-"))) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key; check the spelling against the documented config keys"
    more = f" (and {len(error.errors()) - 1} more)" if len(error.errors()) > 1 else ""
    if ";" not in message:  # pydantic's own messages name the problem only: add where to fix it
        message += f"; add {path} to the config" if first["type"] == "missing" else f"; fix {path} in the config or override it"
    return f"{path}: {message}{more}"


def read_yaml(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """A YAML config file as a dict with ``key=value`` overrides applied; file and syntax problems are UserErrors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} not found; pass an existing YAML file with --config")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}: malformed YAML{where}; fix the syntax ({getattr(error, 'problem', error)})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the config as UTF-8 YAML") from None
    raw = raw if raw is not None else {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    return apply_overrides(raw, overrides or [])


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config, apply ``key=value`` overrides, validate."""
    return parse_config(read_yaml(path, overrides), source=str(path))


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (what was actually run)."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)
