"""Tiny models for the steering tests (built once per module)."""

from __future__ import annotations

import pytest

from circuitlab.models import LoadedModel
from tiny_models import build_tiny

#: a gated family, a plain-MLP Conv1D family, and one with post-feedforward norms
ARCHS = ("LlamaForCausalLM", "GPT2LMHeadModel", "Gemma2ForCausalLM")


@pytest.fixture(scope="module", params=ARCHS)
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny("LlamaForCausalLM", tmp_path_factory.mktemp("llama"))
