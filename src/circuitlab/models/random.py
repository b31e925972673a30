"""Randomly initialised models of published shapes (`models.<name>` with `source: random`).

A real checkpoint cannot always be had (no network, a gated repository), yet whether a stage
survives a real model's *shape* — a 50k–152k vocabulary, tied embeddings, 16–24 layers of
grouped-KV heads, GPT-2's biases, Conv1D and learned positions, a 30,000–200,000-edge ACDC
graph, bf16 — does not depend on the weights. This module builds such a model from a shape file
(`config/shapes/<shape>.json`: an HF ``config.json`` with a ``_source`` note saying where the
figures come from), saves it with ``save_pretrained`` (safetensors, in the target dtype), and
gives it a tokenizer, so every stage loads it exactly as a hub model.

The tokenizer is the toy model's word-level tokenizer over the task corpus
(`circuitlab.models.toy.corpus`, `circuitlab.models.toy.tokenizer`): every task word is one
token, so the datasets check passes on any shape. The model keeps its **real vocabulary size**:
the embedding, the unembedding, KL over the vocabulary and top-k cost what they cost on the
real model, and the rows above the tokenizer's few thousand ids are simply never used. The
config's special-token ids are set to the tokenizer's. What this does *not* exercise is a real
model's own tokenizer (GPT-2's byte-level BPE without a BOS token, Llama-3's tiktoken BPE):
the tokenizer always prepends ``<bos>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuitlab.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from collections.abc import Mapping

    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

    from circuitlab.models.settings import RandomModelConfig

#: Where shape files live, relative to the project root (the pipeline's working directory).
SHAPES_DIR = Path("config") / "shapes"
#: A shape file's key for its source note (not an HF config key: removed before use).
SOURCE_KEY = "_source"


def shape_path(shape: str, root: str | os.PathLike[str] = ".") -> Path:
    """The file of shape `shape` under `root`; ConfigError listing the shapes if it is missing."""
    path = Path(root) / SHAPES_DIR / f"{shape}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (Path(root) / SHAPES_DIR).glob("*.json"))
        raise ConfigError(
            f"no model shape {shape!r} ({path} does not exist); shapes: "
            f"{', '.join(known) or f'none in {Path(root) / SHAPES_DIR}'}"
        )
    return path


def read_shape(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A shape file's HF config mapping, without its source note."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"model shape {path} is not a readable JSON file: {exc}") from exc
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ConfigError(f"model shape {path} must be an HF config.json mapping with model_type")
    raw.pop(SOURCE_KEY, None)
    return raw


def shape_config(raw: Mapping[str, Any], n_layers: int | None = None) -> PretrainedConfig:
    """The HF config of a shape, optionally cut to its first `n_layers` layers (a layer-limited
    slice: every other dimension real, for exact ACDC on a CPU)."""
    from transformers import AutoConfig

    values = dict(raw)
    model_type = values.pop("model_type")
    cls = type(AutoConfig.for_model(model_type))
    key = cls.attribute_map.get("num_hidden_layers", "num_hidden_layers")
    if n_layers is not None:
        if n_layers > values[key]:
            raise ConfigError(f"n_layers {n_layers} is more than the shape's {values[key]} layers")
        values[key] = n_layers
        if "max_window_layers" in values:  # Qwen2: sliding-window layers start after this
            values["max_window_layers"] = min(values["max_window_layers"], n_layers)
    return AutoConfig.for_model(model_type, **values)


def random_model(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    """A model of `config` with the library's own random initialisation (seeded), every norm
    weight perturbed (+0.1·N(0,1)) so that no norm is the identity (a path that ignores a norm
    cannot agree with one that applies it). Built in float32 on the CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln" in name:  # Llama/Qwen2 `*norm`, GPT-2 `ln_1`, `ln_f`
                p.add_(0.1 * torch.randn_like(p))
    return model


def corpus_tokenizer(
    cfg: RandomModelConfig, tasks: Mapping[str, Mapping[str, object]]
) -> PreTrainedTokenizerFast:
    """The toy model's word-level tokenizer over the task corpus (every task word one token;
    the corpus drawn with the entry's seed)."""
    from circuitlab.models.toy.corpus import build_corpus
    from circuitlab.models.toy.tokenizer import build_tokenizer

    return build_tokenizer(build_corpus(tasks, cfg.corpus, cfg.seed))


def build_random_model(
    cfg: RandomModelConfig,
    shape: Mapping[str, Any],
    tasks: Mapping[str, Mapping[str, object]],
    out: str | os.PathLike[str],
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Build the model of entry `cfg` from `shape` (a shape file's mapping) with a tokenizer
    over the corpus of `tasks`, and save both under `out` (safetensors, in ``cfg.dtype``).

    ModelError when the tokenizer needs more ids than the shape's vocabulary has."""
    import torch

    tokenizer = corpus_tokenizer(cfg, tasks)
    if len(tokenizer) > shape["vocab_size"]:
        raise ModelError(
            f"the task corpus has {len(tokenizer)} words but shape {cfg.shape!r} only "
            f"{shape['vocab_size']} vocabulary entries; use a shape with a larger vocab_size"
        )
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = shape_config({**shape, **special}, cfg.n_layers)
    model = random_model(config, cfg.seed)
    dtype: torch.dtype = getattr(torch, cfg.dtype)
    model = model.to(dtype)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return model, tokenizer


def n_parameters(config: PretrainedConfig) -> int:
    """The parameter count of `config`'s model (tied weights once), built on the `meta`
    device: no memory is allocated, so a 1B shape is counted in a test."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())
