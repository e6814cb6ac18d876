"""Load a causal LM and its tokenizer from a folder, as the model's properties say.

A folder that is not such a model raises ``NotLoadable`` with the reason (the registration
answers 400); anything else that fails is the model's load failure as usual.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: option.dtype → torch dtype name.
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16",
          "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16"}


class NotLoadable(Exception):
    """The folder is not a causal LM this engine can load; the message says why."""


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    #: Longest prompt + continuation the model takes (max_position_embeddings).
    context: int
    eos: frozenset[int]
    max_rolling_batch_size: int
    max_new_tokens: int
    output_formatter: str
    #: LoRA slots (option.max_loras) when option.enable_lora=true, else 0: no adapters.
    max_loras: int = 0


def _flag(value: str | None) -> bool:
    return str(value or "").strip().lower() == "true"


def _positive(properties: dict[str, str], key: str) -> int:
    """A positive integer the server always sends (djl/prepare.py fills in the defaults
    of djl/config/: the runtime reads no server configuration)."""
    value = properties.get(key)
    if value in (None, ""):
        raise NotLoadable(f"option.{key} is missing from the worker's init properties")
    try:
        number = int(value)
    except ValueError:
        raise NotLoadable(f"option.{key} must be a positive integer, not {value}") from None
    if number < 1:
        raise NotLoadable(f"option.{key} must be a positive integer, not {value}")
    return number


def check_folder(model_dir: Path, options: Mapping[str, str]) -> dict[str, Any]:
    """The folder's config.json, if it describes a causal LM we may load with ``options``
    (``option.*`` without the prefix); else NotLoadable. Reads one small file: no torch."""
    dtype = options.get("dtype") or "fp32"
    if dtype not in DTYPES:
        raise NotLoadable(f"option.dtype {dtype} is not one of fp32, bf16, fp16")
    trust_remote_code = _flag(options.get("trust_remote_code"))
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotLoadable(f"no config.json in {model_dir}") from None
    except (OSError, ValueError) as exc:
        raise NotLoadable(f"config.json cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise NotLoadable("config.json is not a JSON object")
    architectures = config.get("architectures") or []
    if not any(isinstance(a, str) and a.endswith(("ForCausalLM", "LMHeadModel"))
               for a in architectures):
        raise NotLoadable(f"config.json names no causal-LM architecture: {architectures}")
    if config.get("auto_map") and not trust_remote_code:
        raise NotLoadable("the model's config.json needs code from the model folder "
                          "(auto_map): set option.trust_remote_code=true to run it")
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        raise NotLoadable(f"no weights (*.safetensors) in {model_dir}")
    if not (model_dir / "tokenizer.json").is_file() and not (
            model_dir / "tokenizer_config.json").is_file():
        raise NotLoadable(f"no tokenizer (tokenizer.json) in {model_dir}")
    return config


def load(model_dir: Path, properties: dict[str, str], device_id: int,
         num_threads: int) -> LoadedModel:
    trust = _flag(properties.get("trust_remote_code"))
    config = check_folder(model_dir, properties)
    dtype_name = properties.get("dtype") or "fp32"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if device_id >= 0 and not torch.cuda.is_available():
        raise NotLoadable(f"cannot load on gpu{device_id}: CUDA is not available")
    device = torch.device("cpu" if device_id < 0 else f"cuda:{device_id}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust,
                                                  local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, DTYPES[dtype_name]), trust_remote_code=trust,
            local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise NotLoadable(f"{type(exc).__name__}: {exc}") from None
    model.to(device).eval()
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = config.get("eos_token_id", tokenizer.eos_token_id)
    eos_ids = frozenset(e for e in (eos if isinstance(eos, list) else [eos]) if e is not None)
    context = int(config.get("max_position_embeddings") or tokenizer.model_max_length)
    return LoadedModel(
        model, tokenizer, context, eos_ids,
        _positive(properties, "max_rolling_batch_size"),
        _positive(properties, "max_new_tokens"),
        (properties.get("output_formatter") or "").strip().lower(),
        _positive(properties, "max_loras") if _flag(properties.get("enable_lora")) else 0,
    )
