"""Universal-neuron detection against an obviously-correct per-prompt reference."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from circuitlab.blacklist import detect as bl_mod
from circuitlab.blacklist.detect import (
    KNOWN_LLAMA31_8B,
    LLAMA31_8B_SHAPE,
    Blacklist,
    detect_universal_neurons,
    known_neurons_for,
    required_count,
)
from circuitlab.errors import ArtifactError, ConfigError, DatasetError
from circuitlab.models import LoadedModel
from circuitlab.models.adapters import ModelDims
from circuitlab.models.toy.corpus import (
    FILLER_OBJECTS,
    FILLER_SUBJECTS,
    FILLER_TAILS,
    FILLER_VERBS,
)
from circuitlab.models.toy.tokenizer import build_tokenizer
from circuitlab.tasks.neutral import NEUTRAL_PROMPTS
from reference.blacklist import DOWN, reference_counts, reference_top
from tiny_models import CASES, build_tiny

ARCHS = ("LlamaForCausalLM", "GPT2LMHeadModel")
TOP_K = 8
D_MLP = 64  # tiny_models DIMS["intermediate_size"] / GPT-2 n_inner
N_LAYERS = 2


def make_prompts(n: int = 24) -> list[str]:
    """Distinct prompts of 1..8 tiny-tokenizer words, so right-padding matters."""
    prompts = [
        " ".join(f"w{(5 * i + 11 * j + i * j) % 62}" for j in range(1 + (3 * i) % 8))
        for i in range(n)
    ]
    assert len(set(prompts)) == n
    return prompts


PROMPTS = make_prompts()


@pytest.fixture(scope="module", params=ARCHS)
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_tiny("LlamaForCausalLM", tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def ref_tops(lm: LoadedModel) -> list[set[tuple[int, int]]]:
    return reference_top(lm, PROMPTS, TOP_K)


# ---------------------------------------------------------------- detection
def test_counts_equal_per_prompt_reference(
    lm: LoadedModel, ref_tops: list[set[tuple[int, int]]]
) -> None:
    # fraction small enough that a single hit suffices: every count is compared
    found = detect_universal_neurons(
        lm, PROMPTS, top_k=TOP_K, threshold_fraction=0.01, batch_size=5
    )
    ref = reference_counts(ref_tops)
    assert found.neurons == dict(ref)
    assert len(set(ref.values())) > 2  # the comparison is not trivial
    # the default fraction keeps exactly the neurons the reference counts >= ceil(0.8 * 24) = 20
    strict = detect_universal_neurons(lm, PROMPTS, top_k=TOP_K, batch_size=5)
    assert strict.neurons == {p: c for p, c in ref.items() if c >= 20}


def test_batch_size_invariance(lm: LoadedModel) -> None:
    runs = [
        detect_universal_neurons(lm, PROMPTS, top_k=TOP_K, threshold_fraction=0.3, batch_size=b)
        for b in (1, 7, 32)
    ]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0].neurons


def test_fraction_one_keeps_only_neurons_in_every_top_k(
    lm: LoadedModel, ref_tops: list[set[tuple[int, int]]]
) -> None:
    found = detect_universal_neurons(lm, PROMPTS, top_k=TOP_K, threshold_fraction=1.0)
    always = set.intersection(*ref_tops)
    assert set(found.neurons) == always
    assert all(c == len(PROMPTS) for c in found.neurons.values())


def test_top_k_all_neurons_with_fraction_one_keeps_every_neuron(llama: LoadedModel) -> None:
    found = detect_universal_neurons(llama, PROMPTS, top_k=D_MLP, threshold_fraction=1.0)
    assert len(found.neurons) == N_LAYERS * D_MLP
    assert set(found.neurons.values()) == {len(PROMPTS)}


@pytest.mark.parametrize(
    ("fraction", "n", "need"),
    [(0.8, 20, 16), (0.8, 24, 20), (0.8, 21, 17), (0.7, 10, 7), (1.0, 24, 24), (0.001, 20, 1)],
)
def test_required_count_is_ceiling(fraction: float, n: int, need: int) -> None:
    assert required_count(fraction, n) == need


def test_stability_matches_split_half_definition(
    lm: LoadedModel, ref_tops: list[set[tuple[int, int]]]
) -> None:
    fraction = 0.2  # a random model has no truly universal neuron; keep the frequent ones
    found = detect_universal_neurons(lm, PROMPTS, top_k=TOP_K, threshold_fraction=fraction)
    half = len(PROMPTS) // 2

    def kept(tops: list[set[tuple[int, int]]]) -> set[tuple[int, int]]:
        need = required_count(fraction, len(tops))
        return {p for p, c in reference_counts(tops).items() if c >= need}

    assert found.neurons
    expected = len(kept(ref_tops[:half]) & kept(ref_tops[half:])) / len(found.neurons)
    assert found.stability == pytest.approx(expected)
    assert found.stability is not None and 0.0 <= found.stability <= 1.0


def test_planted_universal_neuron_is_found_stably(tmp_path: Path) -> None:
    lm = build_tiny("GPT2LMHeadModel", tmp_path)
    with torch.no_grad():  # a huge input bias: neuron (1, 17) fires hard on every prompt
        lm.model.transformer.h[1].mlp.c_fc.bias[17] = 100.0
    found = detect_universal_neurons(lm, PROMPTS, top_k=TOP_K)
    assert found.neurons == {(1, 17): len(PROMPTS)}
    assert found.stability == 1.0


def test_stability_none_when_nothing_detected(llama: LoadedModel) -> None:
    found = detect_universal_neurons(llama, PROMPTS, top_k=1, threshold_fraction=1.0)
    if found.neurons:  # pragma: no cover - depends on the random model
        pytest.skip("this random model has a neuron in every top-1")
    assert found.stability is None


def test_model_is_left_without_hooks(llama: LoadedModel) -> None:
    detect_universal_neurons(llama, PROMPTS, top_k=TOP_K)
    assert all(
        not DOWN["LlamaForCausalLM"](llama.model, layer)._forward_pre_hooks
        for layer in range(N_LAYERS)
    )


# ------------------------------------------------------------ known neurons
def _dims(n_layers: int, d_mlp: int, vocab: int) -> ModelDims:
    return ModelDims(n_layers, 4096, d_mlp, 32, 8, 128, vocab)


def test_known_neurons_only_for_the_llama31_8b_shape() -> None:
    assert LLAMA31_8B_SHAPE == (32, 14336)
    assert len(KNOWN_LLAMA31_8B) == 12
    assert (23, 306) in KNOWN_LLAMA31_8B and (2, 4786) in KNOWN_LLAMA31_8B
    assert known_neurons_for(_dims(32, 14336, 128256)) == KNOWN_LLAMA31_8B
    assert known_neurons_for(_dims(32, 14336, 32000)) == frozenset()  # Mistral-7B's shape
    assert known_neurons_for(_dims(28, 14336, 128256)) == frozenset()
    assert known_neurons_for(_dims(32, 11008, 128256)) == frozenset()
    assert all(0 <= ly < 32 and 0 <= n < 14336 for ly, n in KNOWN_LLAMA31_8B)


def test_known_neurons_added_when_shape_matches(
    llama: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = detect_universal_neurons(llama, PROMPTS, top_k=TOP_K)
    assert plain.known == []
    extra = frozenset({(1, 63), (0, 0)})
    monkeypatch.setattr(bl_mod, "known_neurons_for", lambda dims: extra)
    found = detect_universal_neurons(llama, PROMPTS, top_k=TOP_K)
    assert found.known == [(0, 0), (1, 63)]
    assert found.pairs() == set(found.neurons) | extra
    assert found.neurons == plain.neurons  # known neurons are not counted
    off = detect_universal_neurons(llama, PROMPTS, top_k=TOP_K, known_if_shape_matches=False)
    assert off.known == []


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("prompts", "kwargs", "match"),
    [
        (PROMPTS[:19], {}, "at least 20"),
        ([*PROMPTS[:23], "  "], {}, "empty"),
        ([*PROMPTS[:23], PROMPTS[0]], {}, "repeats"),
        (PROMPTS, {"threshold_fraction": 0.0}, "threshold_fraction"),
        (PROMPTS, {"threshold_fraction": 1.5}, "threshold_fraction"),
        (PROMPTS, {"top_k": 0}, "top_k"),
        (PROMPTS, {"top_k": D_MLP + 1}, "top_k"),
        (PROMPTS, {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_inputs_raise_config_error(
    llama: LoadedModel, prompts: list[str], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        detect_universal_neurons(llama, prompts, **kwargs)


def test_unknown_words_raise_dataset_error_naming_the_prompts(llama: LoadedModel) -> None:
    prompts = [*PROMPTS[:22], "w1 hello w2", "w3 w4 world"]
    with pytest.raises(DatasetError, match="unknown token") as err:
        detect_universal_neurons(llama, prompts)
    assert "w1 hello w2" in str(err.value) and "w3 w4 world" in str(err.value)
    assert "'w5" not in str(err.value)


# ---------------------------------------------------------------- artifact
@pytest.fixture(scope="module")
def saved(llama: LoadedModel) -> Blacklist:
    found = detect_universal_neurons(llama, PROMPTS, top_k=TOP_K, threshold_fraction=0.2)
    assert found.neurons
    return Blacklist(
        neurons=found.neurons,
        n_prompts=found.n_prompts,
        top_k=found.top_k,
        threshold_fraction=found.threshold_fraction,
        stability=found.stability,
        known=[(0, 3)],
        n_layers=found.n_layers,
        d_mlp=found.d_mlp,
    )


def test_json_round_trip(saved: Blacklist, tmp_path: Path) -> None:
    path = saved.save(tmp_path / "bl" / "tiny.json")
    data = json.loads(path.read_text())
    assert all("," in key for key in data["neurons"])
    assert data["n_neurons"] == len(saved.pairs())
    loaded = Blacklist.load(path)
    assert loaded == saved
    assert loaded.pairs() == set(saved.neurons) | {(0, 3)}
    assert (saved.n_layers, saved.d_mlp) == (N_LAYERS, D_MLP)


def _edit(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(data: dict[str, Any]) -> Any:
        data[key] = value
        return data

    return edit


def _rename_first(key: str) -> Callable[[dict[str, Any]], Any]:
    def edit(data: dict[str, Any]) -> Any:
        neurons = data["neurons"]
        neurons[key] = neurons.pop(next(iter(neurons)))
        return data

    return edit


def _set_first(value: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(data: dict[str, Any]) -> Any:
        data["neurons"][next(iter(data["neurons"]))] = value
        return data

    return edit


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda data: [data],
        _edit("format", "something/else"),
        _edit("extra", 1),
        lambda data: {k: v for k, v in data.items() if k != "top_k"},
        _edit("n_prompts", "24"),
        _edit("threshold_fraction", 0.0),
        _edit("stability", 1.5),
        _edit("neurons", [[0, 1]]),
        _rename_first("0;1"),
        _rename_first(f"{N_LAYERS},0"),
        _rename_first(f"0,{D_MLP}"),
        _set_first(10_000),
        _set_first(1.5),
        _edit("known", [[0, 1, 2]]),
        _edit("known", [[0.0, 1]]),
        _edit("n_neurons", 0),
        _edit("min_count", 3),
    ],
)
def test_malformed_file_raises_artifact_error(
    saved: Blacklist, tmp_path: Path, corrupt: Callable[[dict[str, Any]], Any]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(corrupt(saved.to_json())))
    with pytest.raises(ArtifactError, match=r"bad\.json"):
        Blacklist.load(path)


def test_not_json_or_missing_file_raises_artifact_error(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Blacklist.load(tmp_path / "x.json")
    with pytest.raises(ArtifactError, match="blacklist"):
        Blacklist.load(tmp_path / "missing.json")


def test_check_shape_names_both_shapes(saved: Blacklist, llama: LoadedModel) -> None:
    saved.check_shape(llama.dims)  # same shape: no error
    other = _dims(32, 14336, 128256)
    with pytest.raises(ConfigError) as err:
        saved.check_shape(other)
    text = str(err.value)
    assert f"n_layers={N_LAYERS}, d_mlp={D_MLP}" in text
    assert "n_layers=32, d_mlp=14336" in text


# ----------------------------------------------------------- default prompts
def test_default_prompts_use_only_toy_filler_words() -> None:
    vocab = {
        word
        for phrases in (FILLER_SUBJECTS, FILLER_VERBS, FILLER_OBJECTS, FILLER_TAILS)
        for phrase in phrases
        for word in phrase.split()
    } | {"."}
    assert len(NEUTRAL_PROMPTS) >= 20
    assert len(set(NEUTRAL_PROMPTS)) == len(NEUTRAL_PROMPTS)
    for prompt in NEUTRAL_PROMPTS:
        words = prompt.split(" ")
        assert all(words), f"{prompt!r}: words must be separated by single spaces"
        assert set(words) <= vocab, f"{prompt!r} uses {set(words) - vocab}"
        assert "." not in words[:-1], f"{prompt!r}: '.' only ends a sentence"
    assert any(not p.endswith(" .") for p in NEUTRAL_PROMPTS)  # some are truncated
    # the toy tokenizer built from filler sentences alone knows every token of the defaults
    tok = build_tokenizer(
        f"{s} {v} {o}{t} ."
        for s in FILLER_SUBJECTS
        for v in FILLER_VERBS
        for o in FILLER_OBJECTS
        for t in FILLER_TAILS
    )
    ids = tok(list(NEUTRAL_PROMPTS), add_special_tokens=False)["input_ids"]
    assert all(tok.unk_token_id not in x for x in ids)
    assert [len(x) for x in ids] == [len(p.split()) for p in NEUTRAL_PROMPTS]


def test_case_table_has_the_tested_architectures() -> None:
    assert set(ARCHS) <= set(CASES)
