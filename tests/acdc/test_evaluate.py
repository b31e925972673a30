"""Evaluation of edge circuits on the test split: faithfulness, random controls, agreement."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from acdc_support import pair_rows
from sklearn.metrics import roc_auc_score
from torch.utils._python_dispatch import TorchDispatchMode

from circuitlab.acdc import patchable, prepare_rows
from circuitlab.acdc.artifact import CircuitArtifact, EdgeCircuit
from circuitlab.acdc.discover import discover_artifact
from circuitlab.acdc.evaluate import (
    EVAL_COPIES,
    auc,
    circuit_mask,
    eval_chunks,
    evaluate_circuits,
    jaccard,
    pair_bytes,
    run_masks,
)
from circuitlab.acdc.settings import AcdcConfig
from circuitlab.errors import ArtifactError, DatasetError
from circuitlab.models import LoadedModel
from circuitlab.tracking.clean import clean_metrics
from circuitlab.types import TaskRow

LLAMA = "LlamaForCausalLM"
CHEAP = AcdcConfig(tao_bases=[1.0], tao_exps=[-2, -1], n_prompts=4, reference_tau=0.1)


def split_rows() -> list[TaskRow]:
    """4 train rows and 3 test rows (equal clean/corrupt lengths)."""
    test = [
        r.model_copy(update={"split": "test", "id": f"t{i}"})
        for i, r in enumerate(pair_rows(3, seed=1))
    ]
    return pair_rows(4, seed=0) + test


def fixed(method: str, edges: tuple[str, ...], circuits: list[tuple[str, ...]]) -> CircuitArtifact:
    return CircuitArtifact(
        method=method,
        model="m",
        task="t",
        edges=edges,
        scores=tuple(float(i) for i in range(len(edges))),
        score_kind="abs_attribution",
        circuits=tuple(EdgeCircuit(f"c{i}", c) for i, c in enumerate(circuits)),
        n_forward=1,
        n_backward=0,
        seconds=0.1,
        n_prompts=4,
    )


def test_full_and_empty_circuits_bracket_faithfulness(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny(LLAMA)
    edges = patchable(lm).graph.edges
    art = fixed("head_pruning", edges, [edges, ()])
    report = evaluate_circuits(lm, split_rows(), [art], CHEAP)
    full, empty = (report["methods"]["head_pruning"]["circuits"][k] for k in ("00", "01"))
    assert full["kl"] == pytest.approx(0.0, abs=1e-5)
    assert full["recovery"] == pytest.approx(1.0, abs=1e-4)
    assert empty["recovery"] == pytest.approx(0.0, abs=1e-4)
    assert empty["kl"] == pytest.approx(report["kl_ablated"], rel=1e-4)
    assert report["kl_ablated"] > 0  # the ablation changed something
    assert full["random"]["kl_mean"] == pytest.approx(0.0, abs=1e-5)  # all edges: no choice
    assert report["n_prompts"] == 3 and report["n_edges"] == len(edges)
    clean_metrics("acdc_evaluate", report)  # nested dicts of scalars: loggable as is


def test_methods_agreement_and_random_controls(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny(LLAMA)
    rows = split_rows()
    arts = [discover_artifact(lm, rows, CHEAP, m) for m in ("acdc", "eap", "head_pruning")]
    report = evaluate_circuits(lm, rows, arts, CHEAP)
    assert set(report["methods"]) == {"acdc", "eap", "head_pruning"}
    acdc = report["methods"]["acdc"]
    assert [c["tau"] for c in acdc["circuits"].values()] == [0.01, 0.1]
    assert acdc["reference"]["tau"] == 0.1
    # every circuit's KL is its own patched run's (recomputed here, one mask at a time)
    by_method = {a.method: a for a in arts}
    edges = patchable(lm).graph.edges
    ctx = prepare_rows(patchable(lm), [r for r in rows if r.split == "test"], CHEAP.ablation)
    for method, res in report["methods"].items():
        for key, c in res["circuits"].items():
            kept = by_method[method].circuits[int(key)].kept
            alone = run_masks(ctx, circuit_mask(edges, kept)[None], batch_size=1)[0, 0].item()
            assert c["kl"] == pytest.approx(alone, rel=1e-4, abs=1e-6), (method, key)
            if 0 < c["n_edges"] < report["n_edges"]:
                assert math.isfinite(c["random"]["kl_ci"]) and c["random"]["kl_ci"] >= 0
    agree = report["agreement"]
    assert agree["reference_method"] == "acdc"
    assert set(agree["jaccard"]) == {"acdc_vs_eap", "acdc_vs_head_pruning", "eap_vs_head_pruning"}
    assert set(agree["roc_auc"]) == {"eap", "head_pruning"}
    # EAP's scores ranked against ACDC's reference circuit, recomputed with scikit-learn
    reference = set(by_method["acdc"].reference_circuit(CHEAP.reference_tau).kept)
    labels = [e in reference for e in edges]
    eap = by_method["eap"]
    expected = None if all(labels) or not any(labels) else roc_auc_score(labels, eap.scores)
    assert agree["roc_auc"]["eap"] == (expected if expected is None else pytest.approx(expected))


def test_batched_masks_equal_one_at_a_time(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny(LLAMA)
    pm = patchable(lm)
    ctx = prepare_rows(pm, [r for r in split_rows() if r.split == "test"], "resample")
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(5, pm.graph.n_edges, generator=g) > 0.5).float()
    together = run_masks(ctx, masks, batch_size=5)
    alone = run_masks(ctx, masks, batch_size=1)
    assert together.shape == (5, 2)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    assert len(set(together[:, 0].tolist())) > 1  # the masks changed something


def test_memory_budget_sets_sets_and_prompts_per_forward() -> None:
    # 10 sets, 8 prompts, 100 bytes per (set, prompt) pair
    assert eval_chunks(10, 8, 100, budget=10**6, batch_size=4) == (4, 8)  # batch_size binds
    assert eval_chunks(10, 8, 100, budget=2_400, batch_size=4) == (3, 8)  # 24 pairs: 3 sets
    assert eval_chunks(10, 8, 100, budget=800, batch_size=4) == (1, 8)
    assert eval_chunks(10, 8, 100, budget=500, batch_size=4) == (1, 5)  # prompts split
    assert eval_chunks(10, 8, 100, budget=10, batch_size=4) == (1, 1)  # never below one pair
    assert eval_chunks(2, 8, 100, budget=10**6, batch_size=16) == (2, 8)


def test_pair_bytes_follow_the_shapes(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny(LLAMA)
    ctx = prepare_rows(patchable(lm), [r for r in split_rows() if r.split == "test"], "zero")
    n_sources, seq = len(ctx.graph.sources), ctx.batch.input_ids.shape[1]
    assert pair_bytes(ctx) == EVAL_COPIES * n_sources * seq * lm.dims.d_model * 4  # float32


class _Largest(TorchDispatchMode):
    """The bytes of the largest tensor any operation makes while active."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.bytes = max(self.bytes, t.numel() * t.element_size())
        return out


def test_chunked_evaluation_equals_one_forward_within_its_budget(
    tiny: Callable[[str], LoadedModel],
) -> None:
    lm = tiny(LLAMA)
    pm = patchable(lm)
    ctx = prepare_rows(pm, pair_rows(5), "resample")  # parts of 2, 2 and 1 prompts
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(5, pm.graph.n_edges, generator=g) > 0.5).float()
    one_forward = _Largest()
    with one_forward:
        whole = run_masks(ctx, masks, batch_size=5)
    budget = 2 * pair_bytes(ctx)  # one set on two prompts per forward
    assert eval_chunks(5, len(ctx.batch), pair_bytes(ctx), budget, 5) == (1, 2)
    chunked = _Largest()
    with chunked:
        parts = run_masks(ctx, masks, batch_size=5, memory_bytes=budget)
    # the same metrics: each set's are the prompt-weighted mean of its parts' (a different
    # order of the float32 sum over prompts, so equal up to its rounding, not to the bit)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    assert len(set(whole[:, 0].tolist())) > 1  # the masks changed something
    # the largest tensor (the forward's source outputs) shrinks to fit the budget
    assert chunked.bytes <= budget < one_forward.bytes


def test_helpers() -> None:
    assert jaccard(["a", "b"], ["b", "c"]) == pytest.approx(1 / 3)
    assert jaccard([], []) is None
    assert auc([True, False, True], [math.inf, 0.1, 2.0]) == 1.0
    assert auc([True, True], [1.0, 2.0]) is None
    assert circuit_mask(["a", "b", "c"], ["b"]).tolist() == [1.0, 0.0, 1.0]


def test_errors(tiny: Callable[[str], LoadedModel]) -> None:
    lm = tiny(LLAMA)
    edges = patchable(lm).graph.edges
    with pytest.raises(ArtifactError, match="another model"):
        evaluate_circuits(lm, split_rows(), [fixed("eap", edges[:-1], [()])], CHEAP)
    with pytest.raises(ArtifactError, match="same method"):
        evaluate_circuits(lm, split_rows(), [fixed("eap", edges, [()])] * 2, CHEAP)
    with pytest.raises(DatasetError, match="no test rows"):
        evaluate_circuits(
            lm, [r for r in split_rows() if r.split == "train"], [fixed("eap", edges, [()])], CHEAP
        )


def test_the_default_memory_budget_is_the_settings_default() -> None:
    from circuitlab.acdc.evaluate import EVAL_MEMORY_BYTES
    from circuitlab.acdc.settings import AcdcConfig

    assert AcdcConfig().eval_memory_gb * 1024**3 == EVAL_MEMORY_BYTES
