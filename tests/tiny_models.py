"""Tiny random-weight models of every registered architecture, saved to disk and loaded back
through `load_model`, so tests exercise the real `from_pretrained` path."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import Tensor, nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from circuitlab.models import LoadedModel, load_model
from circuitlab.types import TaskRow

DIMS = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
HEADS = dict(num_attention_heads=4, num_key_value_heads=2)
GEMMA = dict(**DIMS, **HEADS, head_dim=8)

# The manual MLP-neuron formula per family, written against HF's own module names (not the
# adapter's), so a wrong path in an adapter cannot agree with itself.
Neurons = Callable[[nn.Module, Tensor], Tensor]


def _gated(layer: nn.Module, x: Tensor) -> Tensor:
    return layer.mlp.act_fn(layer.mlp.gate_proj(x)) * layer.mlp.up_proj(x)


def _gpt2(layer: nn.Module, x: Tensor) -> Tensor:
    return layer.mlp.act(layer.mlp.c_fc(x))


@dataclass(frozen=True)
class Case:
    cls: type
    config: Any
    n_kv_heads: int
    neurons: Neurons
    mlp_norm: str  # HF name of the norm whose output is the MLP input
    down_weight: Callable[[nn.Module], Tensor]  # [d_model, d_mlp]


def _linear_down(layer: nn.Module) -> Tensor:
    return layer.mlp.down_proj.weight


CASES: dict[str, Case] = {
    "LlamaForCausalLM": Case(
        LlamaForCausalLM, LlamaConfig(**DIMS, **HEADS), 2, _gated, "post_attention_layernorm",
        _linear_down,
    ),
    "MistralForCausalLM": Case(
        MistralForCausalLM, MistralConfig(**DIMS, **HEADS), 2, _gated,
        "post_attention_layernorm", _linear_down,
    ),
    "Qwen2ForCausalLM": Case(
        Qwen2ForCausalLM, Qwen2Config(**DIMS, **HEADS), 2, _gated, "post_attention_layernorm",
        _linear_down,
    ),
    "GemmaForCausalLM": Case(
        GemmaForCausalLM, GemmaConfig(**GEMMA), 2, _gated, "post_attention_layernorm",
        _linear_down,
    ),
    "Gemma2ForCausalLM": Case(
        Gemma2ForCausalLM, Gemma2Config(**GEMMA), 2, _gated, "pre_feedforward_layernorm",
        _linear_down,
    ),
    "Gemma3ForCausalLM": Case(
        Gemma3ForCausalLM, Gemma3TextConfig(**GEMMA), 2, _gated, "pre_feedforward_layernorm",
        _linear_down,
    ),
    "GPT2LMHeadModel": Case(
        GPT2LMHeadModel,
        GPT2Config(vocab_size=64, n_embd=32, n_inner=64, n_layer=2, n_head=4, n_positions=64),
        4, _gpt2, "ln_2", lambda layer: layer.mlp.c_proj.weight.T,
    ),
}  # fmt: skip


def save_tokenizer(path: Path) -> None:
    vocab = {"<unk>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(62)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>"
    ).save_pretrained(path)


def build_tiny(arch: str, path: Path, seed: int = 0) -> LoadedModel:
    """Save a tiny random `arch` model (norm weights perturbed so none is trivial) and its
    tokenizer under `path`, then load it back with `load_model`."""
    case = CASES[arch]
    torch.manual_seed(seed)
    model = case.cls(case.config)
    with torch.no_grad():  # Gemma norms start at zero weight; make every norm non-trivial
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    save_tokenizer(path)
    return load_model(path)


def make_rows(n: int = 6, seed: int = 0) -> list[TaskRow]:
    """Rows of varied length over the tiny tokenizer's words."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = 3 + i % 4
        words = torch.randint(2, 60, (length,), generator=g).tolist()
        prompt = " ".join(f"w{w}" for w in words)
        rows.append(
            TaskRow(
                id=f"r{i}",
                split="train" if i % 3 else "test",
                prompt=prompt,
                target=f" w{(words[-1] + 1) % 60}",
                counterfactual=f" w{(words[-1] + 7) % 60}",
                corrupt_prompt=prompt,
                meta={"polarity": "positive" if i % 2 else "negative"},
            )
        )
    return rows
