"""Shared helpers of the ACDC tests: supported architectures, contrastive rows, batches."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerFast

from circuitlab.acdc import encode_pairs
from circuitlab.models import LoadedModel
from circuitlab.prompts import PromptBatch
from circuitlab.types import TaskRow

SUPPORTED = [
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "GemmaForCausalLM",
    "GPT2LMHeadModel",
]
REFUSED = ["Gemma2ForCausalLM", "Gemma3ForCausalLM"]


def pair_rows(n: int = 4, seed: int = 0) -> list[TaskRow]:
    """Rows of lengths 3–6 whose corrupt prompt has the same length and different words."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = 3 + i % 4
        words = torch.randint(2, 60, (length,), generator=g).tolist()
        other = torch.randint(2, 60, (length,), generator=g).tolist()
        rows.append(
            TaskRow(
                id=f"p{i}",
                split="train",
                prompt=" ".join(f"w{w}" for w in words),
                corrupt_prompt=" ".join(f"w{w}" for w in other),
                target=f" w{(words[-1] + 1) % 60}",
                counterfactual=f" w{(words[-1] + 7) % 60}",
            )
        )
    return rows


def tokenizer(lm: LoadedModel) -> PreTrainedTokenizerFast:
    """The tiny word-level tokenizer itself (AutoTokenizer maps Qwen2 dirs to Qwen2Tokenizer,
    which does not read a WordLevel vocabulary)."""
    return PreTrainedTokenizerFast.from_pretrained(lm.spec.id)


def batch_of(lm: LoadedModel, rows: list[TaskRow]) -> PromptBatch:
    return encode_pairs(rows, tokenizer(lm))
