"""The planted ground truth: a model whose edge circuit is known by construction, and the ROC
AUC of each method's edge scores against it (issue 4 §3: goal ≥ 0.95)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from circuitlab.acdc import evaluate_masks, patchable, prepare_rows
from circuitlab.acdc.discover import discover_artifact
from circuitlab.acdc.planted import (
    PlantedSpec,
    build_planted,
    edge_auc,
    finite_ranks,
    head_auc,
    planted_aucs,
    planted_edges,
    planted_rows,
    score_artifact,
)
from circuitlab.acdc.settings import AcdcConfig
from circuitlab.errors import ConfigError
from circuitlab.models import LoadedModel

SPEC = PlantedSpec()
# written out by hand for the default circuit {A0.1, MLP 1, A2.3}: A0.1 reads KV head 0 of
# layer 0 (heads 0-1 share it), A2.3 reads KV head 1 of layer 2
EXPECTED = {
    "Resid Start->A0.1.Q", "Resid Start->A0.0.K", "Resid Start->A0.0.V",
    "Resid Start->MLP 1", "A0.1->MLP 1",
    *(f"{s}->A2.{d}" for s in ("Resid Start", "A0.1", "MLP 1") for d in ("3.Q", "1.K", "1.V")),
    *(f"{s}->Resid End" for s in ("Resid Start", "A0.1", "MLP 1", "A2.3")),
}  # fmt: skip
# a short sweep: the smallest τ decides the ranking of the never-removed planted edges
SWEEP = {"tao_bases": [1.0], "tao_exps": [-5, -2], "n_prompts": 8}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Many tiny forwards: one intra-op thread is ~20× faster than two on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_planted(Path(tmp_path_factory.mktemp("planted")), SPEC)


def test_true_edges_are_the_planted_subgraph(planted: LoadedModel) -> None:
    graph = patchable(planted).graph
    truth = planted_edges(graph, SPEC)
    assert truth == EXPECTED
    assert graph.n_edges == 190 and len(truth) == 18
    with pytest.raises(ConfigError, match="not the planted model"):
        planted_edges(graph, PlantedSpec(n_layers=2, heads=((0, 1),)))


@pytest.mark.parametrize("ablation", ["zero", "resample"])
def test_only_planted_edges_matter(planted: LoadedModel, ablation: str) -> None:
    """Identifiability: all non-planted edges patched at once change nothing; every planted
    edge patched alone moves KL far above ACDC's smallest τ."""
    pm = patchable(planted)
    ctx = prepare_rows(pm, planted_rows(planted, 8), ablation)  # type: ignore[arg-type]
    graph, truth = pm.graph, planted_edges(pm.graph, SPEC)
    false_mask = graph.mask(e for e in graph.edges if e not in truth)
    assert torch.allclose(evaluate_masks(ctx, false_mask, "kl"), torch.zeros(1), atol=1e-6)
    singles = torch.stack([graph.mask([e]) for e in sorted(truth)])
    kl = evaluate_masks(ctx, singles, "kl")
    assert bool((kl > 1e-4).all()), dict(zip(sorted(truth), kl.tolist(), strict=True))
    # the whole planted circuit ablated destroys the clean answers (so the path carries them)
    assert float(evaluate_masks(ctx, graph.mask(truth), "kl")[0]) > 0.1


@pytest.mark.parametrize("ablation", ["zero", "resample"])
def test_exact_acdc_and_eap_recover_the_planted_circuit(
    planted: LoadedModel, ablation: str
) -> None:
    rows = planted_rows(planted, 8)
    cfg = AcdcConfig(ablation=ablation, **SWEEP)  # type: ignore[arg-type]
    truth = planted_edges(patchable(planted).graph, SPEC)
    arts = {m: discover_artifact(planted, rows, cfg, m) for m in ("acdc", "eap")}
    report = {m: score_artifact(art, truth, SPEC, cfg.reference_tau) for m, art in arts.items()}
    assert report["acdc"]["auc"] >= 0.95, report
    assert report["eap"]["auc"] >= 0.95, report
    # ACDC's circuits hold planted edges only (removing any other edge costs nothing)
    assert report["acdc"]["kept_true"] == report["acdc"]["n_kept"] > 0
    # the same scores against a wrong truth (other components planted) rank poorly: the AUC
    # can fail
    wrong = planted_edges(patchable(planted).graph, PlantedSpec(heads=((0, 2), (1, 0)), mlps=(2,)))
    for art in arts.values():
        assert edge_auc(art.edges, art.scores, wrong) < 0.8


def test_default_weight_scale_hides_the_circuit_from_acdc(tmp_path: Path) -> None:
    """At HF's initializer range (0.02) every planted edge moves KL by ~1e-7, below τ = 1e-5:
    ACDC removes planted edges like the others (EAP's ranking still sees them)."""
    spec = PlantedSpec(init_std=0.02)
    lm = build_planted(tmp_path, spec)
    cfg = AcdcConfig(ablation="zero", tao_bases=[1.0], tao_exps=[-5], n_prompts=8)
    report = planted_aucs(lm, spec, planted_rows(lm, 8), cfg, methods=("acdc", "eap"))
    assert report["acdc"]["auc"] < 0.95 and report["eap"]["auc"] >= 0.95


def test_head_pruning_is_scored_at_head_level(planted: LoadedModel) -> None:
    cfg = AcdcConfig(ablation="zero", head_pruning={"metric": "kl", "threshold": 1e-4}, n_prompts=8)
    report = planted_aucs(planted, SPEC, planted_rows(planted, 8), cfg, methods=("head_pruning",))
    entry = report["head_pruning"]
    assert entry["head_auc"] == 1.0  # planted heads move KL, zeroed heads exactly not
    # edges out of planted heads into non-planted destinations share their head's score
    assert entry["auc"] < 0.95


def test_rows_differ_everywhere_and_answer_with_the_model(planted: LoadedModel) -> None:
    rows = planted_rows(planted, 6, length=5, seed=3)
    assert rows == planted_rows(planted, 6, length=5, seed=3)
    for row in rows:
        clean, corrupt = row.prompt.split(), row.corrupt_prompt.split()
        assert len(clean) == len(corrupt) == 5
        assert all(a != b for a, b in zip(clean, corrupt, strict=True))
        assert row.target != row.counterfactual
    tok = planted.tokenizer
    ids = torch.tensor([tok(rows[0].prompt)["input_ids"]])
    top = int(planted.model(input_ids=ids).logits[0, -1].argmax())
    assert tok.convert_ids_to_tokens(top) == rows[0].target.strip()


def test_auc_helpers() -> None:
    edges = ("a", "b", "c", "d")
    assert edge_auc(edges, [math.inf, 1.0, 0.5, 0.5], frozenset({"a", "b"})) == 1.0
    assert edge_auc(edges, [0.5, 0.5, 0.5, 0.5], frozenset({"a"})) == 0.5
    assert edge_auc(edges, [0.0, 1.0, 2.0, math.inf], frozenset({"a"})) == 0.0
    assert finite_ranks([math.inf, -math.inf, 2.0]).tolist() == [3.0, 1.0, 2.0]
    assert finite_ranks([math.inf]).tolist() == [1.0]
    with pytest.raises(ConfigError, match="NaN"):
        edge_auc(edges, [math.nan, 1.0, 0.0, 0.0], frozenset({"a"}))
    with pytest.raises(ConfigError, match="both true and false"):
        edge_auc(edges, [1.0, 1.0, 0.0, 0.0], frozenset(edges))
    with pytest.raises(ConfigError, match="not in the graph"):
        edge_auc(edges, [1.0, 1.0, 0.0, 0.0], frozenset({"z"}))
    assert head_auc({"A0.0": 0.0, "A0.1": 2.0, "A2.3": 1.0}, SPEC) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heads": ((3, 0),)}, "outside"),
        ({"mlps": (5,)}, "outside"),
        ({"heads": (), "mlps": ()}, "at least one"),
        ({"n_kv_heads": 3}, "multiple"),
        ({"d_model": 36}, "even size"),
        ({"init_std": math.nan}, "init_std"),
        ({"init_std": 0.0}, "init_std"),
    ],
)
def test_bad_specs(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PlantedSpec(**kwargs)
    with pytest.raises(ConfigError, match="n ≥ 1"):
        planted_rows(None, 0)  # type: ignore[arg-type]
