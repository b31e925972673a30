"""The edge-circuit stage: every method through `discover`, parity with sequential ACDC, errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from acdc_support import pair_rows

from circuitlab.acdc import (
    EAPConfig,
    HeadPruningConfig,
    SweepConfig,
    edge_attribution,
    patchable,
    prepare_rows,
    prune_heads,
    sequential_acdc,
)
from circuitlab.acdc.artifact import CircuitArtifact
from circuitlab.acdc.discover import discover, discover_artifact, nearest, sample_rows
from circuitlab.acdc.settings import ACDC_METHODS, AcdcConfig
from circuitlab.errors import ConfigError, DatasetError, ModelError
from circuitlab.models import LoadedModel
from circuitlab.types import TaskRow
from circuitlab.validation import parse_model

LLAMA = "LlamaForCausalLM"
CHEAP = AcdcConfig(tao_bases=[1.0], tao_exps=[-2, -1], n_prompts=4, reference_tau=0.1)
AVAILABLE = list(ACDC_METHODS)


def split_rows(n_train: int = 4, n_test: int = 3) -> list[TaskRow]:
    train = pair_rows(n_train, seed=0)
    test = [
        r.model_copy(update={"split": "test", "id": f"t{i}"})
        for i, r in enumerate(pair_rows(n_test, seed=1))
    ]
    return train + test


@pytest.mark.parametrize("method", AVAILABLE)
def test_every_method_gives_a_valid_artifact(
    tiny: Callable[[str], LoadedModel], method: str
) -> None:
    data, metrics = discover(tiny(LLAMA), split_rows(), CHEAP, method, model="m", task="t")
    art = CircuitArtifact.from_json(data)
    assert art.method == method and art.model == "m" and art.task == "t"
    assert len(art.scores) == len(art.edges) == metrics["n_edges"]
    assert art.n_prompts == 4 and metrics["n_prompts"] == 4
    assert art.circuits and "reference" not in metrics  # the evaluation picks it
    assert metrics["circuits"]["00"]["n_kept"] == len(art.circuits[0].kept)
    assert all(s >= 0 for s in art.scores)
    assert metrics["seconds"] > 0 and metrics["n_forward"] >= 1
    assert not any(isinstance(v, list) for v in metrics.values())


def test_acdc_matches_sequential(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny(LLAMA)
    rows = split_rows()
    art = discover_artifact(lm, rows, CHEAP, "acdc")
    ctx = prepare_rows(patchable(lm), [r for r in rows if r.split == "train"], "resample")
    ref = sequential_acdc(ctx, SweepConfig(tao_bases=(1.0,), tao_exps=(-2, -1)))
    assert [c.kept for c in art.circuits] == [r.kept for r in ref.per_tau]
    assert art.scores == ref.scores
    assert [c.tau for c in art.circuits] == [0.01, 0.1]
    assert art.reference_index(CHEAP.reference_tau) == 1  # the τ closest to 0.1


def test_head_pruning_keeps_edges_not_leaving_pruned_heads(
    tiny: Callable[[str], LoadedModel],
) -> None:
    lm = tiny(LLAMA)
    rows = split_rows()
    cfg = AcdcConfig(**{**CHEAP.model_dump(), "head_pruning": {"threshold": 0.5}})
    art = discover_artifact(lm, rows, cfg, "head_pruning")
    ctx = prepare_rows(patchable(lm), [r for r in rows if r.split == "train"], "resample")
    res = prune_heads(ctx, HeadPruningConfig(threshold=0.5, metric="target_logit"))
    pruned = set(res.pruned)
    kept = set(art.circuits[0].kept)
    for edge, score in zip(art.edges, art.scores, strict=True):
        src = edge.split("->")[0]
        assert (edge in kept) == (src not in pruned)
        assert score == (abs(res.deltas[src]) if src in res.deltas else math.inf)


def test_eap_scores_are_absolute_and_circuits_are_top_n(
    tiny: Callable[[str], LoadedModel],
) -> None:
    lm = tiny(LLAMA)
    rows = split_rows()
    cfg = AcdcConfig(**{**CHEAP.model_dump(), "eap": {"sizes": [0.1, 0.5]}})
    art = discover_artifact(lm, rows, cfg, "eap")
    ctx = prepare_rows(patchable(lm), [r for r in rows if r.split == "train"], "resample")
    ref = edge_attribution(ctx, EAPConfig())
    assert art.scores == pytest.approx([abs(s) for s in ref.scores])
    n = len(art.edges)
    assert [len(c.kept) for c in art.circuits] == [round(0.1 * n), round(0.5 * n)]
    top = set(ref.ranking()[: round(0.1 * n)])
    assert set(art.circuits[0].kept) == top
    # the signed scores and their convention travel with the artifact
    assert art.details["signed_scores"] == pytest.approx(list(ref.scores))
    assert "metric(edge patched) − metric(clean)" in art.details["sign"]
    assert "auto-circuit" in art.details["sign"]


def test_a_prompt_cap_is_logged_and_recorded(
    tiny: Callable[[str], LoadedModel], caplog: pytest.LogCaptureFixture
) -> None:
    rows = split_rows(n_train=6)
    with caplog.at_level("INFO", logger="circuitlab"):
        art = discover_artifact(lm := tiny(LLAMA), rows, CHEAP, "head_pruning", task="capitals")
    assert (art.n_prompts, art.n_prompts_available) == (4, 6)
    assert "capitals: using 4 of 6 train rows (acdc.n_prompts = 4" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="circuitlab"):
        art = discover_artifact(lm, split_rows(n_train=3), CHEAP, "head_pruning")
    assert (art.n_prompts, art.n_prompts_available) == (3, 3) and "using" not in caplog.text


def test_sample_rows_is_seeded_and_capped() -> None:
    rows = pair_rows(10)
    a, b = sample_rows(rows, 4, 0), sample_rows(rows, 4, 0)
    assert a == b and len(a) == 4
    assert sample_rows(rows, 20, 0) == rows
    assert nearest([0.001, 0.01, 0.1], 0.02) == 1


def test_bad_inputs(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny(LLAMA)
    with pytest.raises(ConfigError, match="unknown edge method 'acdcx'"):
        discover(lm, split_rows(), CHEAP, "acdcx")
    test_only = [r for r in split_rows() if r.split == "test"]
    with pytest.raises(DatasetError, match="no train rows"):
        discover(lm, test_only, CHEAP, "eap")
    bad = pair_rows(3)
    bad[1] = bad[1].model_copy(update={"corrupt_prompt": bad[1].corrupt_prompt + " w5"})
    with pytest.raises(DatasetError, match="p1") as exc:
        discover(lm, bad, CHEAP, "eap")
    assert "corrupt_prompt" in str(exc.value)


def test_refused_architecture(tiny: Callable[[str], LoadedModel]) -> None:
    with pytest.raises(ModelError):
        discover(tiny("Gemma2ForCausalLM"), split_rows(), CHEAP, "eap")


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"tao_bases": [0]}, "tao_bases"),
        ({"tao_bases": [-1.0]}, "tao_bases"),
        ({"tao_bases": [float("nan")]}, "tao_bases"),
        ({"tao_exps": [400]}, "finite"),
        ({"acdc": {"window": 0}}, "window"),
        ({"acdc_approx": {"window": 0}}, "window"),
        ({"eap_sizes": [0.1]}, "acdc.eap_sizes is now acdc.eap.sizes"),
        ({"methods": ["acdc", "nope"]}, "methods"),
        ({"methods": []}, "methods"),
        ({"random_seeds": 2}, "random_seeds"),
        ({"eap": {"sizes": [0.0]}}, "sizes"),
        ({"ablation": "noise"}, "ablation"),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_model(AcdcConfig, raw, "acdc")


@pytest.mark.parametrize("method", AVAILABLE)
def test_each_method_reads_only_its_declared_keys(
    tiny: Callable[[str], LoadedModel], method: str
) -> None:
    """A discovery job's params are `Config.acdc.discovery_params(method)`: a key the method
    reads but does not declare would change results without rerunning the job."""
    from circuitlab.acdc.registry import get_method
    from circuitlab.acdc.settings import ACDC_DISCOVERY_KEYS

    seen: set[str] = set()

    class Recording(AcdcConfig):
        def __getattribute__(self, name: str):  # type: ignore[no-untyped-def]
            if name in AcdcConfig.model_fields:
                seen.add(name)
            return super().__getattribute__(name)

    cfg = Recording(**CHEAP.model_dump())
    seen.clear()  # what the validators read while building it is not discovery's
    art = discover_artifact(tiny(LLAMA), split_rows(), cfg, method)
    declared = {*ACDC_DISCOVERY_KEYS, *get_method(method).shared, method}
    assert seen <= declared, f"{method} reads undeclared keys {seen - declared}"
    assert seen, "the recording saw nothing: the check would pass vacuously"
    assert set(art.params) == declared  # the artifact records exactly what the job read
