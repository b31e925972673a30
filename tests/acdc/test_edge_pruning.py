"""Learned edge masks (`circuitlab.acdc.methods.edge_pruning`): deterministic, a ranking in
[0, 1], and on the planted model it ranks the planted edges high and beats random edge sets on
MIB's yardstick."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitlab.acdc.backend import patchable
from circuitlab.acdc.discover import discover_artifact
from circuitlab.acdc.evaluate import evaluate_circuits
from circuitlab.acdc.planted import (
    PlantedSpec,
    build_planted,
    edge_auc,
    planted_edges,
    planted_rows,
)
from circuitlab.acdc.settings import AcdcConfig
from circuitlab.models import LoadedModel

SPEC = PlantedSpec()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return build_planted(Path(tmp_path_factory.mktemp("planted")), SPEC)


def test_edge_pruning_is_deterministic_and_ranks_the_planted_edges(planted: LoadedModel) -> None:
    rows = planted_rows(planted, 8)
    cfg = AcdcConfig(edge_pruning={"steps": 60})
    art = discover_artifact(planted, rows, cfg, "edge_pruning")
    again = discover_artifact(planted, rows, cfg, "edge_pruning")
    assert art.scores == again.scores  # no sampling: the same masks every run
    assert all(0.0 <= s <= 1.0 for s in art.scores)
    assert art.score_kind == "learned_mask" and art.n_backward == 60
    assert "signed_scores" not in art.details  # the scores are importances already
    truth = planted_edges(patchable(planted).graph, SPEC)
    assert edge_auc(art.edges, art.scores, truth) >= 0.75
    wrong = planted_edges(patchable(planted).graph, PlantedSpec(heads=((0, 2), (1, 0)), mlps=(2,)))
    assert edge_auc(art.edges, art.scores, wrong) < 0.75
    # the budget shrank to final_fraction: the hinge pushed the masks from 0.95 (θ = 3) down
    assert art.details["final_kept"] <= 0.25


def test_edge_pruning_beats_random_edges_on_mibs_yardstick(planted: LoadedModel) -> None:
    train = planted_rows(planted, 8)
    test = [
        r.model_copy(update={"split": "test", "id": f"t{r.id}"})
        for r in planted_rows(planted, 8, seed=1)
    ]
    cfg = AcdcConfig(methods=["edge_pruning"], edge_pruning={"steps": 60})
    art = discover_artifact(planted, train, cfg, "edge_pruning")
    mib = evaluate_circuits(planted, train + test, [art], cfg)["mib"]
    ours, random = mib["methods"]["edge_pruning"], mib["random"]
    assert ours["cpr"] > random["cpr_mean"] + random["cpr_ci"]
    assert ours["cmd"] < random["cmd_mean"] - random["cmd_ci"]
