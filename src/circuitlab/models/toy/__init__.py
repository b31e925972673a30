"""The embedded default model: corpus from the task families, word-level tokenizer, small Llama."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from circuitlab.config import ToyArchitecture, ToyCorpus, ToyTraining
from circuitlab.models.toy.corpus import build_corpus
from circuitlab.models.toy.tokenizer import build_tokenizer
from circuitlab.models.toy.train import TrainResult, train_toy_model

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from circuitlab.config import ToyModelConfig

__all__ = [
    "ToyArchitecture",
    "ToyCorpus",
    "ToyTraining",
    "TrainResult",
    "build_corpus",
    "build_tokenizer",
    "build_toy_model",
    "train_toy_model",
]


def build_toy_model(
    cfg: ToyModelConfig,
    family_params: Mapping[str, Any],
    seed: int,
    *,
    progress: bool = True,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, TrainResult]:
    """Corpus → tokenizer (the corpus's words) → trained model. Pure and seeded.

    The model depends on the families' corpus parameters only, not on the dataset files: the
    corpus covers every entity by construction, and `check_dataset` rejects any dataset row
    holding a word the tokenizer does not know.
    """
    corpus = build_corpus(family_params, cfg.corpus, seed)
    tokenizer = build_tokenizer(corpus)
    result = train_toy_model(cfg.architecture, cfg.training, corpus, tokenizer, progress=progress)
    return result.model, tokenizer, result
