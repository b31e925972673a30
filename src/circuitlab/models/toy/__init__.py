"""The embedded default model: corpus from the task families (`corpus`), word-level tokenizer
(`tokenizer`), small Llama trained on CPU (`train`), and its settings (`settings`).

Attributes load lazily, so importing `circuitlab.models.toy.settings` (the config does) does not
pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from circuitlab.lazy import exports

if TYPE_CHECKING:
    from circuitlab.models.toy.corpus import build_corpus
    from circuitlab.models.toy.settings import (
        ToyArchitecture,
        ToyCorpus,
        ToyModelConfig,
        ToyTraining,
    )
    from circuitlab.models.toy.tokenizer import build_tokenizer
    from circuitlab.models.toy.train import TrainResult, build_toy_model, train_toy_model

_WHERE = {
    "ToyArchitecture": "circuitlab.models.toy.settings",
    "ToyCorpus": "circuitlab.models.toy.settings",
    "ToyModelConfig": "circuitlab.models.toy.settings",
    "ToyTraining": "circuitlab.models.toy.settings",
    "TrainResult": "circuitlab.models.toy.train",
    "build_corpus": "circuitlab.models.toy.corpus",
    "build_tokenizer": "circuitlab.models.toy.tokenizer",
    "build_toy_model": "circuitlab.models.toy.train",
    "train_toy_model": "circuitlab.models.toy.train",
}
__all__ = [
    "ToyArchitecture",
    "ToyCorpus",
    "ToyModelConfig",
    "ToyTraining",
    "TrainResult",
    "build_corpus",
    "build_tokenizer",
    "build_toy_model",
    "train_toy_model",
]

__getattr__, __dir__ = exports(__name__, _WHERE)
